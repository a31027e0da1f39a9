"""Who is the reference and who are the targets: deterministic episode plans.

The paper: "each method is tested for three rounds, where the metrics were averaged. For each
group of images, the reference inputs were fixed and consistently used." Three readings:

- ``fixed``: each group has designated references — the group's ``references`` entry in the
  dataset when it names them (a manifest's per-group field), otherwise the first members of a
  seeded order — the same in every round; rounds differ only by the seed handed to the method,
  so their spread measures the method's own randomness.
- ``paper`` (default): per group, ``rounds`` reference choices, one per round. The group's
  members are put in a seeded order; round r uses members ``r·K … r·K+k−1`` of that order
  (cyclically), so rounds use different references whenever the group has enough images, and
  the spread over rounds measures the choice of reference.
- ``official``: what the official IconMatting code does, but seeded: every image is a target
  once per round; its reference is drawn from its group, itself excluded when the group has
  more than two images. Targets sharing a reference in a round share one episode.

``references=k`` with ``max_references=K`` (k ≤ K; None: K = k): the K first candidates of a
round are reserved as references for every k ≤ K, and the targets are the group's other images,
so the target set is the same for k = 1…K (the paper's Table 6 compares like with like). Groups
with no image left as a target (n ≤ K) are skipped and reported, or, with ``singletons="self"``,
evaluated with themselves as reference and flagged ``self_reference``.

``guidance="per_image"`` (the paper's IconMatting*, "guidance information for every image"):
every image is its own reference, one episode per image and round, flagged ``self_reference``.

Every episode carries a seed for the method (:func:`episode_seed`), different per group and round.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.seeding import rng_for
from benchmark.types import Dataset, Episode

PROTOCOLS = ("paper", "fixed", "official")
GUIDANCE = ("group", "per_image")


def episode_seed(seed: int, group: str, round_index: int) -> int:
    """The seed a method receives for one episode: stable, and different per group and round."""
    return int(rng_for(seed, "method", group, round_index).integers(2**31 - 1))


@dataclass(frozen=True)
class SkippedGroup:
    group: str
    reason: str


def _check(protocol: str, rounds: int, references: int, max_references: int, singletons: str,
           guidance: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose one of {PROTOCOLS}")
    if not 1 <= references <= 4:
        raise ValueError(f"references must be 1..4, got {references}")
    if not references <= max_references <= 4:
        raise ValueError(f"max_references must be in [references, 4] = [{references}, 4], got {max_references}")
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    if singletons not in ("skip", "self"):
        raise ValueError(f"singletons must be 'skip' or 'self', got '{singletons}'")
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {GUIDANCE}, got '{guidance}'")
    if protocol == "official" and references != 1:
        raise ValueError("the official protocol uses exactly one reference per target")


def plan_episodes(dataset: Dataset, protocol: str = "paper", rounds: int = 3, references: int = 1,
                  seed: int = 0, singletons: str = "skip", max_references: int | None = None,
                  guidance: str = "group") -> tuple[list[Episode], list[SkippedGroup]]:
    """All episodes of a run, in group-major, round-minor order, plus the groups left out."""
    k_max = references if max_references is None else int(max_references)
    _check(protocol, rounds, references, k_max, singletons, guidance)
    fixed = dataset.meta.get("fixed_reference")
    if fixed:  # a video: its first frame is the reference of every frame, in one round
        key = dataset.samples[fixed].group
        return [Episode(key, 0, (fixed,), dataset.groups[key].sample_ids, self_reference=True)], []
    episodes: list[Episode] = []
    skipped: list[SkippedGroup] = []
    for key, group in dataset.groups.items():
        members = sorted(group.sample_ids)
        if guidance == "per_image":
            eps, why = [Episode(key, r, (m,), (m,), self_reference=True) for r in range(rounds) for m in members], None
        elif protocol == "official":
            eps, why = _official_group(key, members, rounds, seed), None
        else:
            designated = group.meta.get("references") if protocol == "fixed" else None
            eps, why = _reserved_group(key, members, protocol, rounds, references, k_max, seed, singletons,
                                       designated)
        episodes.extend(eps)
        if why:
            skipped.append(SkippedGroup(key, why))
    return episodes, skipped


def _candidates(key: str, members: list[str], protocol: str, r: int, k_max: int, seed: int,
                designated: list[str] | None) -> tuple[str, ...]:
    """The K reference candidates of round r: designated or seeded, fixed across rounds for ``fixed``."""
    n = len(members)
    if designated:
        order = [m for m in designated if m in members] + [m for m in members if m not in designated]
    else:
        order = [members[i] for i in rng_for(seed, "paper", key).permutation(n)]
    start = 0 if protocol == "fixed" else r * k_max
    return tuple(order[(start + j) % n] for j in range(k_max))


def _reserved_group(key: str, members: list[str], protocol: str, rounds: int, k: int, k_max: int, seed: int,
                    singletons: str, designated: list[str] | None) -> tuple[list[Episode], str | None]:
    n = len(members)
    if n <= k_max:
        if singletons != "self":
            return [], f"{n} image(s), need more than {k_max} for the reference candidates and a target"
        return [Episode(key, r, tuple(members[:k]), tuple(members), self_reference=True)
                for r in range(rounds)], None
    out = []
    for r in range(rounds):
        candidates = _candidates(key, members, protocol, r, k_max, seed, designated)
        targets = tuple(m for m in members if m not in candidates)
        out.append(Episode(key, r, candidates[:k], targets))
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
