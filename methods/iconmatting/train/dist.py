"""``torch.distributed`` helpers of the IconMatting trainer (a no-op single process without ``torchrun``)."""

from __future__ import annotations

import datetime
import os

import torch
from torch import Tensor


class Dist:
    """The process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); a no-op single process otherwise."""

    def __init__(self, timeout_min: int = 120) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self._owns_group = False
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
            self._owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, x: Tensor) -> Tensor:
        """Mean of ``x`` over processes (a copy)."""
        if not self.enabled:
            return x.clone()
        y = x.clone()
        torch.distributed.all_reduce(y)
        return y / self.world

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is true on any of them."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self._owns_group:
            torch.distributed.destroy_process_group()
            self._owns_group = False
