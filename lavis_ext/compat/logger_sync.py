"""Reduce logger meters on the process group's own device.

``SmoothedValue.synchronize_between_processes`` (called through
``MetricLogger.synchronize_between_processes`` at the end of every training epoch) builds its
``[count, total]`` tensor on ``device="cuda"`` whenever a process group exists, so any gloo
(CPU) group fails there. The replacement puts the tensor where the backend can reduce it:
the current CUDA device for nccl, the CPU for gloo and everything else.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def collective_device() -> torch.device:
    """The device a tensor must live on for the default process group's collectives."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _synchronize_between_processes(self: Any) -> None:
    """Sum count and total over all ranks (the deque stays per-rank, as in LAVIS)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    t = torch.tensor([self.count, self.total], dtype=torch.float64, device=collective_device())
    dist.barrier()
    dist.all_reduce(t)
    count, total = t.tolist()
    self.count = int(count)
    self.total = total


def patch_synchronize(stock: Any) -> Any:
    """Patch factory for ``SmoothedValue.synchronize_between_processes``."""
    return _synchronize_between_processes
