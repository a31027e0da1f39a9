"""The official learning-rate schedule: linear warm-up, then constant.

Source: ``tiny-smart/in-context-matting:icm/lr_scheduler.py`` (class ``LambdaLinearScheduler``) @ ``d5197e0``,
configured by ``config/train_in_context_matting_training_free_attn_multiscale.yaml@a4778ea`` with
``warm_up_steps=[250], f_start=[1e-6], f_max=[1.0], f_min=[1.0], cycle_lengths=[1e13]`` and wrapped in
``torch.optim.lr_scheduler.LambdaLR(Adam(lr=4e-4))`` stepped every optimiser step
(``icm/models/in_context_matting.py:257-281`` @ ``d5197e0``).

The official lambda returns a *multiplier* of the base lr: ``f(n) = (f_max − f_start)/250 · n + f_start`` for
``n < 250`` and ``f_min + (f_max − f_min)·(cycle − n)/cycle = 1`` afterwards. So the official lr at optimiser step
``n`` (0-based; ``LambdaLR`` applies ``f(0)`` at construction and ``f(n)`` after ``n`` calls of ``step()``) is
``4e-4 · f(n)``: 4e-10 at step 0 (not 1e-6), rising linearly to 4e-4·(249/250 + 1e-6/250) at step 249 and exactly
4e-4 from step 250 on. That is the default here (``start_factor=1e-6``); pass ``start_lr`` for an absolute
starting lr instead (the reading "warm-up from 1e-6" of the brief).
"""

from __future__ import annotations

import functools

import torch

BASE_LR = 4e-4
WARMUP_STEPS = 250
START_FACTOR = 1e-6


def warmup_factor(step: int, *, warmup_steps: int = WARMUP_STEPS, start_factor: float = START_FACTOR) -> float:
    """The official ``LambdaLinearScheduler`` multiplier at 0-based optimiser step ``step``."""
    if step < warmup_steps:
        return (1.0 - start_factor) / warmup_steps * step + start_factor
    return 1.0


def warmup_lr(step: int, *, base_lr: float = BASE_LR, warmup_steps: int = WARMUP_STEPS, start_lr: float | None = None,
              start_factor: float = START_FACTOR) -> float:
    """Learning rate at 0-based optimiser step ``step``.

    Default: the official ``base_lr · f(step)`` (starts at ``base_lr · start_factor``). With ``start_lr``, the
    warm-up runs linearly from ``start_lr`` (absolute) to ``base_lr`` over ``warmup_steps`` instead."""
    factor = start_factor if start_lr is None else start_lr / base_lr
    return base_lr * warmup_factor(step, warmup_steps=warmup_steps, start_factor=factor)


def _lambda(step: int, *, base_lr: float, warmup_steps: int, start_lr: float | None, start_factor: float) -> float:
    return warmup_lr(step, base_lr=base_lr, warmup_steps=warmup_steps, start_lr=start_lr,
                     start_factor=start_factor) / base_lr


def make_scheduler(optimizer: torch.optim.Optimizer, *, base_lr: float = BASE_LR, warmup_steps: int = WARMUP_STEPS,
                   start_lr: float | None = None, start_factor: float = START_FACTOR
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` giving :func:`warmup_lr`; call ``step()`` once per optimiser step, as the official run does.

    Sets every param group's ``initial_lr`` to ``base_lr`` first so the optimiser's own lr does not matter. The
    lambda is a picklable ``functools.partial``, so ``state_dict()`` / ``load_state_dict()`` resume it exactly."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr
        group["initial_lr"] = base_lr
    fn = functools.partial(_lambda, base_lr=base_lr, warmup_steps=warmup_steps, start_lr=start_lr,
                           start_factor=start_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=fn, last_epoch=-1)


__all__ = ["BASE_LR", "START_FACTOR", "WARMUP_STEPS", "make_scheduler", "warmup_factor", "warmup_lr"]
