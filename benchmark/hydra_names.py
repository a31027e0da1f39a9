"""OmegaConf resolvers that name Hydra output folders (``conf/config.yaml`` uses them).

``${icm_overrides:}``: the job's command-line overrides as one file-name-safe, deterministic folder
name, so that a multirun over any key (``-m runner.shard=0,1,2,3 runner.num_shards=4``) gives one
folder per job. Left out: the group choices already in the folder prefix (``method``, ``dataset``,
``prompt``), ``hydra`` overrides, path-like keys and values (data, checkpoints, output folders)
and execution-only settings that do not change results (``runner.workers``, ``progress``,
``overwrite``, ``retry_errors``, ``on_error``), so that resuming with another worker count or from
another checkout finds the same folder. What is left is sorted by key and joined as
``runner.num_shards=4,runner.shard=0``; bytes outside ``[A-Za-z0-9._=-]`` become ``+XX`` (hex),
commas inside a value included, so distinct overrides never share a name. No overrides: ``default``.

``${icm_shard_suffix:${runner.shard},${runner.num_shards}}``: ``-shard<i>of<n>`` when ``n > 1``,
else empty, so that shards run one by one by hand (``hydra.run.dir``) get one folder each.

Import this module before Hydra composes the config (``benchmark/__main__.py`` does); registering
again replaces the resolvers, so a second import is harmless.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

OVERRIDES_RESOLVER = "icm_overrides"
SHARD_SUFFIX_RESOLVER = "icm_shard_suffix"
EMPTY_NAME = "default"
MAX_NAME = 200  # bytes; file names stop at 255, the tail becomes a hash beyond this
PREFIX_GROUPS = frozenset({"method", "dataset", "prompt", "hydra"})
EXCLUDED_KEYS = frozenset({
    "dataset.root", "dataset.groups", "dataset.path", "method.checkpoint", "method.sd_path",
    "runner.workers", "runner.progress", "runner.overwrite", "runner.retry_errors", "runner.on_error",
})
_SAFE = re.compile(r"[A-Za-z0-9._=-]")


def _escape(text: str) -> str:
    """Every byte outside ``[A-Za-z0-9._=-]`` as ``+XX`` (so ``+`` and ``,`` are always escaped)."""
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"+{b:02X}" for b in ch.encode()) for ch in text)


def _split(override: str) -> tuple[str, str | None]:
    """(key without the ``+``/``++`` prefix, value or None) of one ``key=value`` override."""
    key, eq, value = override.partition("=")
    return key.lstrip("+"), value if eq else None


def _excluded(key: str, value: str | None) -> bool:
    group = re.split(r"[./@]", key.lstrip("~"), maxsplit=1)[0]
    if ("." not in key and group in PREFIX_GROUPS) or group == "hydra":
        return True
    pathlike = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    return key.lstrip("~") in EXCLUDED_KEYS or any(sep in (value or "") for sep in pathlike)


def override_dirname(overrides: Iterable[str]) -> str:
    """The folder name for a job with these command-line overrides (see the module docstring)."""
    items = sorted((kv for kv in map(_split, overrides) if not _excluded(*kv)), key=lambda kv: (kv[0], kv[1] or ""))
    name = ",".join(_escape(k) + ("" if v is None else "=" + _escape(v)) for k, v in items)
    if not name:
        return EMPTY_NAME
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[:MAX_NAME - 18]}-h{digest}"
    return name


def shard_suffix(shard: object, num_shards: object) -> str:
    """``-shard<i>of<n>`` when the run is one of several shards, else ``""``."""
    return f"-shard{int(shard)}of{int(num_shards)}" if int(num_shards) > 1 else ""


def _task_overrides(root: DictConfig | None) -> list[str]:
    task = OmegaConf.select(root, "hydra.overrides.task", default=None) if root is not None else None
    if task is None:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    return [str(o) for o in task]


def _overrides_resolver(*, _root_: DictConfig) -> str:
    return override_dirname(_task_overrides(_root_))


def register() -> None:
    """Register both resolvers (replacing earlier registrations; results are never cached)."""
    OmegaConf.register_new_resolver(OVERRIDES_RESOLVER, _overrides_resolver, replace=True)
    OmegaConf.register_new_resolver(SHARD_SUFFIX_RESOLVER, shard_suffix, replace=True)


register()
