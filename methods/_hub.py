"""What every weight-backed adapter shares: device and dtype choice, offline loading, clear
"expected file X at Y" errors, and content fingerprints of weight files.

Nothing here downloads. A model is a local folder, a file, or a Hugging Face Hub id that is already
in the local cache (``snapshot_download(..., local_files_only=True)``). Each adapter's README says
which files go where; the errors below point there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DTYPE_NAMES = ("fp32", "bf16", "fp16")


def readme(method: str) -> str:
    """The adapter's README: which files to place where."""
    return f"methods/peers/{method}.md"


class WeightsNotFound(FileNotFoundError):
    """An adapter's weights are not where its configuration says (nothing is ever downloaded)."""


def resolve_device(device: str) -> Any:
    """'auto' → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: Any, method: str = "method", cuda_auto: str = "fp16") -> Any:
    """fp32 | bf16 | fp16 | 'auto' (``cuda_auto`` on CUDA, fp32 elsewhere)."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype == "auto":
        return table[cuda_auto] if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise ValueError(f"{method}: dtype must be one of {sorted(table)} or 'auto', got {dtype!r}")
    return table[dtype]


def _looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def model_dir(path_or_id: str | Path | None, *, method: str, expected: Sequence[str] = ("config.json",),
              what: str = "model folder") -> Path:
    """A local model folder, or a Hub id already in the local HF cache, holding every ``expected`` file."""
    if path_or_id in (None, ""):
        raise WeightsNotFound(f"{method}: no {what} configured (see {readme(method)})")
    text = str(path_or_id)
    root = Path(text).expanduser()
    if not root.is_dir() and _looks_like_hub_id(text):
        try:
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(text, local_files_only=True))
        except Exception as exc:
            raise WeightsNotFound(
                f"{method}: '{text}' is not a folder and is not in the local Hugging Face cache (nothing is "
                f"downloaded; see {readme(method)}): {type(exc).__name__}: {exc}") from exc
    if not root.is_dir():
        raise WeightsNotFound(f"{method}: expected the {what} at {root}, which is not a folder (see {readme(method)})")
    for name in expected:
        if not (root / name).is_file():
            raise WeightsNotFound(f"{method}: expected file {name} at {root / name} (see {readme(method)})")
    return root


def weight_file(path: str | Path | None, *, method: str, what: str) -> Path:
    """A checkpoint file that must exist: a clear error names the file, the setting and the README."""
    if path in (None, ""):
        raise WeightsNotFound(f"{method}: no {what} configured (see {readme(method)})")
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFound(f"{method}: expected the {what} file at {p} (see {readme(method)})")
    return p


def sampled_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's size and of 1 MiB at its start, middle and end: reads 3 MiB of a 5 GB
    weight file, yet any two different trained models differ in them."""
    size = Path(path).stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(offset)
            h.update(f.read(chunk))
    return h.hexdigest()


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_fingerprint(files: Iterable[Path], extra: Mapping[str, Any] | None = None) -> str:
    """Hash of weight files' contents (configs whole with their names, weights sampled, names ignored)
    and of ``extra`` facts, independent of where the files live or what a weight file is called:
    moving or renaming the weights or changing the device keeps it."""
    h = hashlib.sha256(json.dumps(dict(extra or {}), sort_keys=True, default=str).encode())
    for f in sorted({Path(p) for p in files}, key=lambda p: p.name):
        if f.suffix in (".json", ".txt", ".yaml"):
            h.update(f.name.encode() + f.read_bytes())
        else:  # a weight file: its content only, so a renamed copy keeps the fingerprint
            h.update(sampled_digest(f).encode())
    return h.hexdigest()[:16]


def folder_files(root: Path) -> list[Path]:
    """The files of a Hugging Face model folder that define its outputs (configs and weights)."""
    keep = (".json", ".safetensors", ".bin", ".pth", ".pt", ".txt")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in keep)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info logs and progress bars while a model loads."""
    from transformers.utils import logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def load_pretrained(cls: Any, root: Path, device: Any = None, dtype: Any = None) -> Any:
    """``cls.from_pretrained(root)`` offline and quietly; a model is moved to ``device``/``dtype`` (cast after
    loading, which works on any transformers version) and put in eval mode."""
    with quiet_transformers():
        obj = cls.from_pretrained(root, local_files_only=True)
    if device is not None:
        obj = obj.to(device, dtype).eval()
    return obj


def read_state_dict(path: Path, *, method: str, key: str | None = None, strip: str = "module.",
                    trust: bool = False) -> dict[str, Any]:
    """Tensors of a ``.pth``/``.ckpt``/``.safetensors`` file, unwrapped from ``key`` (e.g. 'state_dict',
    'model') when present and with a DataParallel ``strip`` prefix removed. ``weights_only`` unless
    ``trust``."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
        except Exception as exc:
            hint = "" if trust else " (if you trust this file, set trust_checkpoint=true)"
            raise ValueError(f"{method}: cannot read checkpoint {path}: {type(exc).__name__}: {exc}{hint}") from exc
    if key is not None and isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{method}: {path} holds a {type(obj).__name__}, not a state dict")
    return {(k[len(strip):] if strip and k.startswith(strip) else k): v for k, v in obj.items()}


def state_problems(module: Any, state: Mapping[str, Any], what: str = "") -> list[str]:
    """Every missing, unexpected or mis-shaped key of ``state`` against ``module`` (a renamed key shows up
    as one missing and one unexpected name); ``what`` names the model in the messages ("decoder")."""
    expected = module.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)} {what + ' ' if what else ''}key(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected)}")
    problems += [f"shape of {k}: checkpoint {tuple(v.shape)} vs {what or 'model'} {tuple(expected[k].shape)}"
                 for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    return problems
