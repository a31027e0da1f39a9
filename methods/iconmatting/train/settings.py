"""The ``train`` configuration block of the IconMatting trainer, validated, and its errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class TrainConfigError(ValueError):
    """The configuration is invalid, or the run folder holds a run of another configuration."""


class TrainingError(RuntimeError):
    """Training stopped: the loss exploded (the official > 1e4 / NaN check)."""



@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` block (``conf/train/default.yaml`` documents every key)."""

    steps: int = 20000
    seed: int = 0
    image_size: int = 768
    datasets: tuple[Mapping[str, Any], ...] = ()
    batch_size: int = 2
    accumulate: int = 1
    optimizer: str = "adam"
    lr: float = 4e-4
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 250
    warmup_start_factor: float = 1e-6
    max_loss: float | None = 1e4
    timestep: int = 200
    ensemble_size: int = 4
    posterior: str = "sample"
    dtype: str = "fp32"
    upcast_attention: bool = True
    attention_impl: str = "sdpa"
    crop: str = "center"
    interpolation: str = "random"
    trimap_radius: int | None = None
    reference: str = "other"
    reshuffle: bool = True
    epoch_size: int | None = None
    device: str = "auto"
    compile: bool = False
    channels_last: bool = False
    num_workers: int = 2
    precompute_features: int = 0
    precompute_dtype: str = "fp32"
    checkpoint_every: int = 500
    val_every: int = 0
    val_dataset: Mapping[str, Any] | None = None
    val_metric: str = "SAD"
    val_region: str = "whole"
    val_runner: Mapping[str, Any] = field(default_factory=dict)
    val_method: Mapping[str, Any] = field(default_factory=dict)
    log_every: int = 1
    progress: str = "auto"
    tensorboard: bool = True
    dist_timeout_min: int = 120

    #: keys that may change between runs of one folder (everything else is the identity)
    RUNTIME = frozenset({"steps", "accumulate", "max_loss", "attention_impl", "device", "compile", "channels_last",
                         "num_workers", "checkpoint_every", "val_every", "log_every", "progress", "tensorboard",
                         "dist_timeout_min"})
    #: identity keys recorded elsewhere in the identity (datasets by fingerprint, validation by its own block)
    ELSEWHERE = frozenset({"datasets", "val_dataset", "val_metric", "val_region", "val_runner", "val_method"})

    @classmethod
    def from_config(cls, train: Mapping[str, Any]) -> TrainSettings:
        """Validated settings; unknown keys and invalid values are a :class:`TrainConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(train) - known)
        if unknown:
            raise TrainConfigError(f"unknown train key(s) {unknown}; see conf/train/default.yaml")
        kw = dict(train)
        kw["datasets"] = tuple(dict(d) for d in kw.get("datasets") or ())
        kw["betas"] = tuple(float(b) for b in kw.get("betas", (0.9, 0.999)))
        for key in ("val_runner", "val_method"):
            kw[key] = dict(kw.get(key) or {})
        settings = cls(**kw)
        settings.check()
        return settings

    def check(self) -> None:
        choices = {"optimizer": ("adam", "adamw"), "dtype": tuple(DTYPES), "posterior": ("sample", "mean"),
                   "crop": ("center", "random"), "reference": ("other", "official"),
                   "interpolation": ("random", "fixed"),
                   "precompute_dtype": tuple(DTYPES), "progress": ("auto", "on", "off"),
                   "attention_impl": ("sdpa", "math")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise TrainConfigError(f"train.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.image_size % 64 or self.image_size < 64:
            raise TrainConfigError(f"train.image_size must be a multiple of 64 (≥ 64), got {self.image_size}")
        for key in ("steps", "checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise TrainConfigError(f"train.{key} must be ≥ 1")
        for key in ("batch_size", "accumulate", "ensemble_size"):
            if getattr(self, key) < 1:
                raise TrainConfigError(f"train.{key} must be ≥ 1")
        if self.precompute_features < 0 or self.val_every < 0 or self.num_workers < 0:
            raise TrainConfigError("train.precompute_features, val_every and num_workers must be ≥ 0")

    @property
    def resolved_weight_decay(self) -> float:
        """0 for Adam (official); torch's AdamW default 0.01 for AdamW unless set."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.01 if self.optimizer == "adamw" else 0.0

    def identity(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME | self.ELSEWHERE}
        out["weight_decay"] = self.resolved_weight_decay
        if self.dtype == "fp32":
            out.pop("upcast_attention")  # no effect in fp32
        return json.loads(json.dumps(out, default=list))
