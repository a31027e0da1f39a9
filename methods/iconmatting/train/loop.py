"""The training loop of the IconMatting in-context decoder: resumable, deterministic, DDP-ready.

One optimiser step (:meth:`Trainer.step`) runs ``train.accumulate`` micro-batches of ``train.batch_size`` pairs
per process: decode and augment each pair (:func:`.data.load_example`), encode the reference and the target with
the frozen SD 2.1 extractor (fresh noise per image, seeded), take the reference's RoI tokens from its
ground-truth alpha, run the decoder (BatchNorm in training mode), the official loss (:func:`.loss.matting_loss`),
backward; then Adam (or AdamW) and the warm-up schedule. Official sources: TRAINING.md.

Determinism: the pairs, the augmentation and the noise of step ``s`` are pure functions of ``(train.seed, s)``
(draw indices ``s·E … s·E + E − 1``, E = the effective batch), never of process history, and the decoder,
optimiser, scheduler and BatchNorm state are saved whole. A run killed at any moment and re-run in the same
folder therefore continues from its last checkpoint exactly as if it had not stopped (bit-identical losses on
the CPU). ``OUT/train.json`` stores the run's identity; a re-run with another identity is refused.

Several GPUs: plain ``torch.distributed`` DDP under ``torchrun`` (env ``WORLD_SIZE`` > 1); rank ``r`` takes
micro-batch slots ``m·world + r``, so the examples of a step, and the way they are split into BatchNorm batches,
depend only on ``batch_size`` and the effective batch. Rank 0 alone writes checkpoints, logs and validations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmark.io import atomic_write_text
from benchmark.run_lock import RunLock, RunLockedError
from benchmark.rundir import identity_changes

from ..decoder import DecoderConfig, InContextDecoder
from ..features import (
    SD21_REPO,
    ExtractorSettings,
    SDFeatureExtractor,
    folder_fingerprint,
    image_seed,
    resolve_sd_path,
)
from .batch import BatchedDecoder, build_data
from .checkpoints import atomic_torch_save, official_checkpoint, rng_state, set_rng_state
from .dist import Dist
from .features import FreshFeatures, PrecomputedFeatures
from .loss import TERMS, matting_loss_terms
from .schedule import make_scheduler
from .settings import DTYPES, TrainConfigError, TrainingError, TrainSettings

log = logging.getLogger(__name__)

#: Version of the trainer's maths and file layout, part of the identity.
TRAINER_VERSION = 1


def training_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two training identities, one phrase per key (:func:`benchmark.rundir.identity_changes`,
    with the Stable Diffusion fingerprint named in words)."""
    sd = "the Stable Diffusion weights changed (sd_path's content)"
    return [sd if c.startswith("sd: ") else c for c in identity_changes(old, new)]


@dataclass(frozen=True)
class StepResult:
    step: int  # optimiser steps done after this one
    loss: float
    terms: dict[str, float]
    lr: float
    seconds: float


class Trainer:
    """Trains the in-context decoder in the run folder ``out_dir`` (see the module docstring).

    ``cfg`` is the resolved ``conf/train_config.yaml`` (plain dicts): ``sd_path``, ``prompt_embeds_file``,
    ``check_sd21``, ``dataset`` (or None) and ``train``. Construction locks the folder (rank 0), checks the
    identity against ``OUT/train.json`` and loads ``OUT/checkpoints/resume.pt`` when present; the SD models are
    built on the first :meth:`step`, so a finished run never loads them. Use as a context manager (or call
    :meth:`close`)."""

    def __init__(self, cfg: Mapping[str, Any], out_dir: str | Path) -> None:
        self.cfg = json.loads(json.dumps(cfg, default=list))
        self.settings = TrainSettings.from_config(self.cfg["train"])
        self.out = Path(out_dir).resolve()
        self.ckpt_dir = self.out / "checkpoints"
        self.dist = Dist(self.settings.dist_timeout_min)
        self.device = self._device()
        self._lock: RunLock | None = None
        self._closed = False
        self.extractor: SDFeatureExtractor | None = None
        self.model: BatchedDecoder | None = None
        self.source: FreshFeatures | PrecomputedFeatures | None = None
        self.log_sink: Any = None
        self.step_count = 0
        self.last: StepResult | None = None
        self._val_history: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        try:
            self._take_lock()
            self.data = build_data(self.cfg, self.settings)
            from .validate import ValidationSpec

            self.val_spec = ValidationSpec.from_train(self.cfg["train"])
            self.identity = self._identity()
            self._check_identity()
            self.decoder, self.optimizer, self.scheduler = self._build_trainable()
            self._resume()
            self._write_run_json()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ construction
    def _device(self) -> torch.device:
        if self.settings.device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.dist.local_rank) if self.dist.enabled else torch.device("cuda")
            return torch.device("cpu")
        dev = torch.device(self.settings.device)
        if dev.type == "cuda" and self.dist.enabled and dev.index is None:
            return torch.device("cuda", self.dist.local_rank)
        return dev

    def _take_lock(self) -> None:
        """Rank 0 holds ``OUT/.lock`` for the trainer's lifetime; every rank stops if it cannot."""
        error: RunLockedError | None = None
        if self.dist.main:
            self._lock = RunLock(self.out / ".lock")
            try:
                self._lock.acquire()
            except RunLockedError as exc:
                self._lock, error = None, exc
        if self.dist.any(error is not None, self._collective_device()):
            raise error or RunLockedError(f"{self.out} is in use by another run (see rank 0)")

    def _collective_device(self) -> torch.device:
        return self.device if self.dist.enabled and torch.distributed.get_backend() == "nccl" else torch.device("cpu")

    def _identity(self) -> dict[str, Any]:
        s = self.settings
        val = None
        if self.val_spec is not None:
            from .validate import val_identity

            val = val_identity(self.val_spec)
        return {
            "version": TRAINER_VERSION,
            "data": self.data.identity(),
            "sd": folder_fingerprint(resolve_sd_path(self.sd_path)),
            "train": s.identity(),
            "effective_batch": s.batch_size * s.accumulate * self.dist.world,
            "validation": val,
        }

    @property
    def sd_path(self) -> str:
        return str(self.cfg.get("sd_path") or SD21_REPO)

    @property
    def effective_batch(self) -> int:
        return int(self.identity["effective_batch"])

    @property
    def run_json(self) -> Path:
        return self.out / "train.json"

    def _check_identity(self) -> None:
        if not self.run_json.is_file():
            return
        stored = json.loads(self.run_json.read_text())["identity"]
        changes = training_changes(stored, self.identity)
        if changes:
            raise TrainConfigError(f"{self.out} holds a training run of another configuration ({self.run_json}): "
                                   + "; ".join(changes) + ". Use another hydra.run.dir (only train.steps and the "
                                   "logging, checkpoint, validation-frequency and speed options may change)")

    def _build_trainable(self) -> tuple[InContextDecoder, torch.optim.Optimizer, Any]:
        """The decoder (PyTorch default init under ``train.seed``, fp32), the optimiser and the schedule."""
        s = self.settings
        channels = self._feature_channels()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            decoder = InContextDecoder(DecoderConfig.for_input(s.image_size, channels))
        decoder = decoder.to(self.device).train()
        if s.channels_last:
            decoder = decoder.to(memory_format=torch.channels_last)
        cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
        opt = cls(decoder.parameters(), lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.resolved_weight_decay)
        sched = make_scheduler(opt, base_lr=s.lr, warmup_steps=s.warmup_steps, start_factor=s.warmup_start_factor)
        return decoder, opt, sched

    def _feature_channels(self) -> tuple[int, int]:
        """Up block 0/1 widths from the UNet config (without loading the weights)."""
        root = resolve_sd_path(self.sd_path)
        chans = list(reversed(json.loads((root / "unet" / "config.json").read_text())["block_out_channels"]))
        return int(chans[0]), int(chans[1])

    def _ensure_models(self) -> None:
        """Build the frozen extractor, the batched decoder (DDP-wrapped when distributed) and the feature source."""
        if self.model is not None:
            return
        s = self.settings
        settings = ExtractorSettings(timestep=s.timestep, ensemble_size=s.ensemble_size, posterior=s.posterior,
                                     noise_seed=s.seed, attention_impl=s.attention_impl,
                                     upcast_attention=s.upcast_attention)
        if s.dtype != "fp32" and self.device.type != "cuda":
            log.warning("train.dtype=%s on %s: autocast works but is slow; it is meant for CUDA", s.dtype, self.device)
        if not self.dist.main:
            self.dist.barrier()  # rank 0 first: it writes prompt_embeds_file when missing, the others then read it
        self.extractor = SDFeatureExtractor.from_pretrained(
            self.sd_path, settings, prompt_embeds_file=self.cfg.get("prompt_embeds_file"),
            check_sd21=bool(self.cfg.get("check_sd21", True)), device=self.device, dtype=DTYPES[s.dtype])
        if self.dist.main:
            self.dist.barrier()
        model = BatchedDecoder(self.decoder)
        if s.compile:
            model.compile_body()
        self.model = model
        self._forward: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward = DistributedDataParallel(model, device_ids=ids)
        self.source = PrecomputedFeatures(self) if s.precompute_features else FreshFeatures(self)

    # ------------------------------------------------------------------ resume
    @property
    def resume_file(self) -> Path:
        return self.ckpt_dir / "resume.pt"

    @property
    def last_file(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    def _resume(self) -> None:
        if not self.resume_file.is_file():
            return
        state = torch.load(self.resume_file, map_location="cpu", weights_only=True)
        if state.get("identity_sha") != self._identity_sha():
            raise TrainConfigError(f"{self.resume_file} belongs to another run (identity hash differs); "
                                   "use another hydra.run.dir")
        self.decoder.load_state_dict(state["decoder"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step_count = int(state["step"])
        if self.dist.main and not self._last_is_current():
            self._write_last()  # killed between resume.pt and last.ckpt
        log.info("resuming %s at step %d", self.out, self.step_count)

    def _identity_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    def _last_is_current(self) -> bool:
        if not self.last_file.is_file():
            return False
        try:
            ckpt = torch.load(self.last_file, map_location="cpu", weights_only=True)
        except Exception:
            return False
        return int(ckpt.get("global_step", -1)) == self.step_count

    def _write_run_json(self) -> None:
        if not self.dist.main:
            return
        doc = json.loads(self.run_json.read_text()) if self.run_json.is_file() else {"starts": []}
        doc["identity"] = self.identity
        doc["config"] = self.cfg
        doc["starts"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_step": self.step_count,
                              "steps": self.settings.steps, "world_size": self.dist.world,
                              "argv": list(sys.argv)})
        atomic_write_text(self.run_json, json.dumps(doc, indent=1, default=str))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_meta(self) -> dict[str, Any]:
        s = self.settings
        return {"step": self.step_count, "image_size": s.image_size, "feature_channels": list(self._feature_channels()),
                "identity_sha": self._identity_sha(), "trainer_version": TRAINER_VERSION}

    def write_decoder_checkpoint(self, path: str | Path) -> None:
        """The decoder in the official layout (``method=iconmatting method.checkpoint=PATH`` loads it strictly)."""
        atomic_torch_save(official_checkpoint(self.decoder, self.step_count, self.checkpoint_meta()), Path(path))

    def _write_last(self) -> None:
        self.write_decoder_checkpoint(self.last_file)

    def save_checkpoint(self) -> None:
        """``resume.pt`` (self-contained: decoder, optimiser, scheduler, step, RNG and sampler state), then
        ``last.ckpt``; rank 0 writes, the others wait. Each file is replaced atomically."""
        if self.dist.main:
            self.data.sampler.position = self.step_count * self.effective_batch
            state = {"step": self.step_count, "identity_sha": self._identity_sha(),
                     "decoder": {k: v.detach().cpu().clone() for k, v in self.decoder.state_dict().items()},
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "sampler": self.data.sampler.state_dict(), "rng": rng_state(),
                     "world_size": self.dist.world}
            atomic_torch_save(state, self.resume_file)
            self._write_last()
        self.dist.barrier()

    # ------------------------------------------------------------------ one step
    def indices(self, step: int, micro: int) -> list[int]:
        """Draw indices of this process's micro-batch ``micro`` of optimiser step ``step`` (0-based)."""
        bs, world = self.settings.batch_size, self.dist.world
        start = step * self.effective_batch + (micro * world + self.dist.rank) * bs
        return list(range(start, start + bs))

    def augmentation(self) -> dict[str, Any]:
        """The :func:`.data.load_example` options of this run."""
        s = self.settings
        return {"size": s.image_size, "crop": s.crop, "interpolation": s.interpolation,
                "trimap_radius": s.trimap_radius}

    def noise_seed(self, index: int, role: str, sample_id: str) -> int:
        """The noise generator seed of one image of draw ``index``: a hash of (seed, index, role, sample id)."""
        return image_seed(self.settings.seed, index, role, sample_id, stream="train-noise")

    def _autocast(self):
        dtype = DTYPES[self.settings.dtype]
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def _check_loss(self, loss: Tensor, step: int) -> None:
        value = float(loss.detach())
        limit = self.settings.max_loss
        if not np.isfinite(value) or (limit is not None and value > limit):
            raise TrainingError(f"loss explosion at step {step + 1}: {value} (train.max_loss={limit}); the last "
                                f"checkpoint is in {self.ckpt_dir}")

    def step(self) -> float:
        """One optimiser step (all micro-batches); returns its loss (mean of the micro-batch losses over
        micro-batches and processes; each micro-batch loss is summed over its items, as the official loss)."""
        self._ensure_models()
        assert self.source is not None
        s, acc = self.step_count, self.settings.accumulate
        t0 = time.perf_counter()
        self.decoder.train()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(1 + len(TERMS), dtype=torch.float64)
        for m in range(acc):
            if m + 1 < acc:
                self.source.prefetch(self.indices(s, m + 1))
            elif s + 1 < self.settings.steps:
                self.source.prefetch([i for k in range(acc) for i in self.indices(s + 1, k)])
            batch = self.source.micro_batch(self.indices(s, m))
            if self.settings.channels_last:
                batch = batch.to_channels_last()
            sync = m + 1 == acc or not self.dist.enabled
            with contextlib.nullcontext() if sync else self._forward.no_sync():  # type: ignore[operator]
                with self._autocast():
                    alpha = self._forward(batch.image, batch.feats.ft_cor, batch.feats.ft_matting, batch.feats.attn,
                                          batch.tokens)
                terms = matting_loss_terms(batch.sample_map, alpha, batch.alpha)
                loss = torch.stack(list(terms.values())).sum()
                self._check_loss(loss, s)
                (loss / acc).backward()
            totals += torch.tensor([float(loss.detach()), *(float(terms[k].detach()) for k in TERMS)],
                                   dtype=torch.float64)
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so that StepResult.seconds includes the optimiser's kernels
        mean = self.dist.mean((totals / acc).to(self._collective_device())).cpu()
        self.last = StepResult(self.step_count, float(mean[0]), {k: float(v) for k, v in zip(TERMS, mean[1:],
                                                                                              strict=True)},
                               lr, time.perf_counter() - t0)
        return self.last.loss

    # ------------------------------------------------------------------ the run
    @property
    def finished(self) -> bool:
        """Every step done and (with validation) the final step validated."""
        return self.step_count >= self.settings.steps and not self._validation_due(self.step_count)

    def _validation_due(self, step: int) -> bool:
        """Whether the validation of ``step`` is still to run: decided on rank 0 (from ``OUT/val/summary.json``)
        and shared with every rank (a collective call under DDP)."""
        if self.val_spec is None or step == 0:
            return False
        due = False
        if self.dist.main:
            from .validate import Validator

            every = self.settings.val_every
            due = step == self.settings.steps or bool(every and step % every == 0)
            due = due and not Validator(self.val_spec, self.out, {}).done(step)
        return self.dist.any(due, self._collective_device())

    def validation_method(self) -> dict[str, Any]:
        """``method=iconmatting`` keys matching the training's extractor and working size."""
        s = self.settings
        return {"sd_path": str(self.sd_path),
                "prompt_embeds_file": self.cfg.get("prompt_embeds_file"),
                "check_sd21": bool(self.cfg.get("check_sd21", True)), "input_size": s.image_size,
                "timestep": s.timestep, "ensemble_size": s.ensemble_size, "posterior": s.posterior,
                "dtype": s.dtype, "upcast_attention": s.upcast_attention, "attention_impl": s.attention_impl,
                "device": str(self.device)}

    def validate(self) -> dict[str, float] | None:
        """Validate the current decoder (rank 0; the others wait) and log it; None without validation."""
        result = None
        if self.val_spec is not None and self.dist.main:
            from .validate import Validator

            validator = Validator(self.val_spec, self.out, self.validation_method())
            result = validator.run(self.step_count, self.write_decoder_checkpoint)
            if self.log_sink is not None:
                self.log_sink.val(self.step_count, result)
        self.dist.barrier()
        return result

    def _handle_sigterm(self) -> contextlib.AbstractContextManager:
        """SIGTERM (SLURM pre-emption, ``kill``) finishes the current step, checkpoints and exits with 143."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def handler() -> Iterator[None]:
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
            try:
                yield
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

        return handler()

    def run(self) -> StepResult | None:
        """Train to ``train.steps`` with checkpoints, validation and logs; returns the last step's result
        (None when the run had nothing to do). Raises :class:`KeyboardInterrupt` on SIGTERM after saving."""
        s = self.settings
        if self.finished:
            if self.dist.main:
                log.info("%s: the run is at step %d ≥ train.steps=%d: nothing to do (raise train.steps to continue)",
                         self.out, self.step_count, s.steps)
            return None
        from .validate import TrainLog, Validator

        self._ensure_models()  # before the log's clock starts: steps/s measures steps, not loading
        self._val_history = Validator(self.val_spec, self.out, {}).history() if self.val_spec else {}
        metric = f"{s.val_region}/{s.val_metric}"
        self.log_sink = TrainLog(self.out, resume_step=self.step_count, total=s.steps, val_history=self._val_history,
                                 metric=metric, tensorboard=s.tensorboard, progress=s.progress) \
            if self.dist.main else None
        try:
            with self._handle_sigterm():
                if self._validation_due(self.step_count):  # killed during the validation of a saved step
                    self.validate()
                while self.step_count < s.steps:
                    self.step()
                    self._after_step()
                    if self.dist.any(self._stop.is_set(), self._collective_device()):
                        self.save_checkpoint()
                        raise KeyboardInterrupt("SIGTERM")
        finally:
            if self.log_sink is not None:
                self.log_sink.close()
                self.log_sink = None
        return self.last

    def _after_step(self) -> None:
        assert self.last is not None
        s, n = self.settings, self.step_count
        if self.log_sink is not None:
            self.log_sink.step(self.last, force=n == s.steps, every=s.log_every, batch=self.effective_batch)
        if n % s.checkpoint_every == 0 or n == s.steps:
            self.save_checkpoint()
        if self._validation_due(n):
            self.validate()
        elif self.log_sink is not None and n in self._val_history:
            self.log_sink.val(n, self._val_history[n])  # validated before a kill: replay its row, in order

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop the data threads, release the lock and the process group (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.source is not None:
            self.source.close()
        if self.log_sink is not None:
            self.log_sink.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.dist.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compose_train_config(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved training config for these overrides, as ``python -m methods.iconmatting.train`` composes it
    (for tests, benchmarks and scripts)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose(config_name="train_config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]



__all__ = ["BatchedDecoder", "Dist", "StepResult", "TrainConfigError", "TrainSettings", "Trainer", "TrainingError",
           "compose_train_config", "official_checkpoint"]
