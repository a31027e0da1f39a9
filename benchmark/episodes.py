"""Who is the reference and who are the targets: deterministic episode plans.

- ``paper`` (default): per group, ``rounds`` fixed reference choices, one per round. The group's
  members are put in a seeded order; round r uses members ``r·k … r·k+k−1`` of that order
  (cyclically), so rounds use different references whenever the group has enough images.
  Targets are the group's other images. A group with no image left as a target (a group of one
  with k = 1) is skipped and reported, or, with ``singletons="self"``, evaluated with itself as
  reference and flagged ``self_reference``.
- ``official``: what the official IconMatting code does, but seeded: every image is a target
  once per round; its reference is drawn from its group, itself excluded when the group has
  more than two images. Targets sharing a reference in a round share one episode.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.seeding import rng_for
from benchmark.types import Dataset, Episode

PROTOCOLS = ("paper", "official")


@dataclass(frozen=True)
class SkippedGroup:
    group: str
    reason: str


def plan_episodes(dataset: Dataset, protocol: str = "paper", rounds: int = 3, references: int = 1,
                  seed: int = 0, singletons: str = "skip") -> tuple[list[Episode], list[SkippedGroup]]:
    """All episodes of a run, in group-major, round-minor order, plus the groups left out."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of {PROTOCOLS}")
    if not 1 <= references <= 4:
        raise ValueError(f"references must be 1..4, got {references}")
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    if singletons not in ("skip", "self"):
        raise ValueError(f"singletons must be 'skip' or 'self', got '{singletons}'")
    fixed = dataset.meta.get("fixed_reference")
    if fixed:  # a video: its first frame is the reference of every frame, in one round
        key = dataset.samples[fixed].group
        return [Episode(key, 0, (fixed,), dataset.groups[key].sample_ids, self_reference=True)], []
    episodes: list[Episode] = []
    skipped: list[SkippedGroup] = []
    for key, group in dataset.groups.items():
        members = sorted(group.sample_ids)
        if protocol == "paper":
            eps, why = _paper_group(key, members, rounds, references, seed, singletons)
        else:
            if references != 1:
                raise ValueError("the official protocol uses exactly one reference per target")
            eps, why = _official_group(key, members, rounds, seed), None
        episodes.extend(eps)
        if why:
            skipped.append(SkippedGroup(key, why))
    return episodes, skipped


def _paper_group(key: str, members: list[str], rounds: int, k: int, seed: int,
                 singletons: str) -> tuple[list[Episode], str | None]:
    n = len(members)
    order = [members[i] for i in rng_for(seed, "paper", key).permutation(n)]
    if n <= k:
        if singletons != "self":
            return [], f"{n} image(s), need more than {k} for a reference and a target"
        return [Episode(key, r, tuple(members), tuple(members), self_reference=True)
                for r in range(rounds)], None
    out = []
    for r in range(rounds):
        refs = tuple(order[(r * k + j) % n] for j in range(k))
        targets = tuple(m for m in members if m not in refs)
        out.append(Episode(key, r, refs, targets))
    return out, None


def _official_group(key: str, members: list[str], rounds: int, seed: int) -> list[Episode]:
    out = []
    for r in range(rounds):
        rng = rng_for(seed, "official", key, r)
        by_ref: dict[str, list[str]] = {}
        for target in members:
            pool = [m for m in members if m != target] if len(members) > 2 else members
            ref = pool[int(rng.integers(len(pool)))]
            by_ref.setdefault(ref, []).append(target)
        for ref, targets in sorted(by_ref.items()):
            out.append(Episode(key, r, (ref,), tuple(targets), self_reference=ref in targets))
    return out


def shard_groups(groups: list[str], shard: int, num_shards: int) -> set[str]:
    """The groups of ``shard`` out of ``num_shards``: a deterministic round-robin over sorted keys."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    return {g for i, g in enumerate(sorted(groups)) if i % num_shards == shard}
