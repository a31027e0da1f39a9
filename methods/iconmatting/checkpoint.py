"""Loading decoder weights strictly from the official checkpoint or a plain state dict.

Accepted files:
- the official Lightning ``.ckpt`` (``{"state_dict": {"in_context_decoder.…": …}, …}``; the
  official training callback deletes the ``feature_extractor.*`` keys, any left are ignored);
- a ``torch.save``-d plain state dict, with or without the ``in_context_decoder.`` prefix;
- a ``.safetensors`` file with either key form.

Unlike the official ``strict=False`` load, every missing, unexpected or mis-shaped decoder
key is an error listing the keys. ``torch.load`` runs with ``weights_only=True``; a file that
needs arbitrary unpickling is refused unless ``trust_checkpoint=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from methods._hub import state_problems

PREFIX = "in_context_decoder."
IGNORED_PREFIXES = ("feature_extractor.",)


class CheckpointError(ValueError):
    """A decoder checkpoint cannot be read or does not match the decoder."""


def read_state_dict(path: str | Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The raw tensor mapping stored in ``path`` (Lightning ``state_dict`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"iconmatting: checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as e:  # weights_only refuses custom classes; corrupt files also land here
        hint = "" if trust_checkpoint else " (if you trust this file, pass trust_checkpoint=True)"
        raise CheckpointError(f"iconmatting: cannot load checkpoint {path}: {e}{hint}") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"iconmatting: {path} holds a {type(obj).__name__}, not a state dict")
    return {str(k): v for k, v in obj.items()}


def decoder_entries(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoder keys without the ``in_context_decoder.`` prefix; feature-extractor keys dropped.

    If any key has the prefix, keys without it (other than ignored ones) are kept as-is so
    they are reported as unexpected.
    """
    prefixed = any(k.startswith(PREFIX) for k in state)
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(IGNORED_PREFIXES):
            continue
        if prefixed and k.startswith(PREFIX):
            out[k[len(PREFIX) :]] = v
        else:
            out[k] = v
    return out


def check_keys(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Problems (missing, unexpected, shape mismatch) of ``state`` against ``module``."""
    return state_problems(module, state, "decoder")


def load_decoder_weights(
    module: nn.Module, source: str | Path | Mapping[str, torch.Tensor], trust_checkpoint: bool = False
) -> None:
    """Load ``source`` (a file or a mapping) into the decoder ``module``, strictly."""
    raw = read_state_dict(source, trust_checkpoint) if isinstance(source, (str, Path)) else dict(source)
    state = decoder_entries(raw)
    problems = check_keys(module, state)
    if problems:
        where = f" in {source}" if isinstance(source, (str, Path)) else ""
        raise CheckpointError(f"iconmatting: decoder checkpoint does not match{where}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
