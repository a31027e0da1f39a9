"""OmegaConf resolvers that name Hydra output folders (``conf/config.yaml`` uses them).

``${icm_overrides:}``: the job's command-line overrides as one file-name-safe, deterministic folder
name, so that a multirun over any key (``-m runner.shard=0,1,2,3 runner.num_shards=4``) gives one
folder per job. Left out: the group choices already in the folder prefix (``method``, ``dataset``,
``prompt``), ``hydra`` overrides, where the data and the fixed model live (``dataset.root``,
``dataset.groups``, ``method.sd_path``, …), execution settings that do not change results
(``runner.workers``, ``progress``, ``overwrite``, ``retry_errors``, ``on_error``, ``batch_size``,
``save_predictions``) and the method's own runtime settings (``MethodInfo.runtime_params``: device,
batch size, …), so that resuming with another worker count, on another device or from another
checkout finds the same folder. Any other value that is a path is shown by its last part, so a sweep
over checkpoints (``method.checkpoint=/c/e10.pt,/c/e20.pt``) gives ``method.checkpoint=e10.pt``, ….
What is left is sorted by key and joined as ``runner.num_shards=4,runner.shard=0``; bytes outside
``[A-Za-z0-9._=-]`` become ``+XX`` (hex), commas inside a value included, so distinct overrides never
share a name. No overrides: ``default``.

``${icm_shard_suffix:${runner.shard},${runner.num_shards}}``: ``-shard<i>of<n>`` when ``n > 1``,
else empty, so that shards run one by one by hand (``hydra.run.dir``) get one folder each.

``conf/__init__.py`` imports this module, so the resolvers exist whenever Hydra reads ``pkg://conf``;
registering again replaces them, so a second import is harmless.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

OVERRIDES_RESOLVER = "icm_overrides"
SHARD_SUFFIX_RESOLVER = "icm_shard_suffix"
RUN_SUFFIX_RESOLVER = "icm_run_suffix"
EMPTY_NAME = "default"
MAX_NAME = 200  # bytes; file names stop at 255, the tail becomes a hash beyond this
PREFIX_GROUPS = frozenset({"method", "dataset", "prompt", "hydra"})
#: Where the data and the fixed model live, and execution settings that do not change results.
EXCLUDED_KEYS = frozenset({
    "dataset.root", "dataset.groups", "dataset.path", "dataset.reference_alpha", "dataset.cache",
    "method.sd_path", "method.prompt_embeds_file", "runner.workers", "runner.progress", "runner.overwrite",
    "runner.retry_errors", "runner.on_error", "runner.batch_size", "runner.save_predictions",
})
_SAFE = re.compile(r"[A-Za-z0-9._=-]")


def _escape(text: str) -> str:
    """Every byte outside ``[A-Za-z0-9._=-]`` as ``+XX`` (so ``+`` and ``,`` are always escaped)."""
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"+{b:02X}" for b in ch.encode()) for ch in text)


def _split(override: str) -> tuple[str, str | None]:
    """(key without the ``+``/``++`` prefix, value or None) of one ``key=value`` override."""
    key, eq, value = override.partition("=")
    return key.lstrip("+"), value if eq else None


def _pathlike(value: str | None) -> bool:
    return any(sep in (value or "") for sep in {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set()))


def _excluded(key: str, value: str | None, runtime: frozenset[str]) -> bool:
    bare = key.lstrip("~")
    group = re.split(r"[./@]", bare, maxsplit=1)[0]
    if ("." not in key and group in PREFIX_GROUPS) or group == "hydra" or bare in EXCLUDED_KEYS:
        return True
    # a method's runtime settings (device, batch size, …) do not change results; its weight files do
    return bare.startswith("method.") and bare[7:] in runtime and not _pathlike(value) and bare != "method.checkpoint"


def _shown(key: str, value: str | None) -> tuple[str, str | None]:
    """A path-like value is shown by its last part (``/ckpt/epoch10.pt`` → ``epoch10.pt``)."""
    return key, (value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if _pathlike(value) else value)


def override_dirname(overrides: Iterable[str], runtime: Iterable[str] = ()) -> str:
    """The folder name for a job with these command-line overrides (see the module docstring);
    ``runtime``: the method's parameters that do not change results (``MethodInfo.runtime_params``)."""
    skip = frozenset(runtime)
    kept = (_shown(*kv) for kv in map(_split, overrides) if not _excluded(*kv, skip))
    items = sorted(kept, key=lambda kv: (kv[0], kv[1] or ""))
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


def run_suffix(shard: object, num_shards: object, guidance: object = "group", references: object = 1,
               max_references: object = None) -> str:
    """The run folder's tail for settings that make another table of the paper: ``-per_image``
    (Table 4's IconMatting*), ``-k<k>`` or ``-k<k>of<K>`` (Table 6), then :func:`shard_suffix`."""
    out = "" if str(guidance) in ("group", "None") else f"-{guidance}"
    if max_references not in (None, "None"):
        out += f"-k{int(references)}of{int(max_references)}"
    elif int(references) > 1:
        out += f"-k{int(references)}"
    return out + shard_suffix(shard, num_shards)


def _task_overrides(root: DictConfig | None) -> list[str]:
    task = OmegaConf.select(root, "hydra.overrides.task", default=None) if root is not None else None
    if task is None:
        from hydra.core.hydra_config import HydraConfig

        task = HydraConfig.get().overrides.task
    return [str(o) for o in task]


def _runtime_params(root: DictConfig | None) -> frozenset[str]:
    """``MethodInfo.runtime_params`` of the configured method (empty when it cannot be looked up)."""
    try:
        from methods import METHODS
        from methods.base import method_info

        params = OmegaConf.to_container(OmegaConf.select(root, "method"), resolve=False)
        name = str(params.pop("name"))
        params.pop("label", None)
        return frozenset(method_info(METHODS.get(name), params).runtime_params)
    except Exception:
        return frozenset()


def _overrides_resolver(*, _root_: DictConfig) -> str:
    return override_dirname(_task_overrides(_root_), _runtime_params(_root_))


def register() -> None:
    """Register both resolvers (replacing earlier registrations; results are never cached)."""
    OmegaConf.register_new_resolver(OVERRIDES_RESOLVER, _overrides_resolver, replace=True)
    OmegaConf.register_new_resolver(SHARD_SUFFIX_RESOLVER, shard_suffix, replace=True)
    OmegaConf.register_new_resolver(RUN_SUFFIX_RESOLVER, run_suffix, replace=True)


register()
