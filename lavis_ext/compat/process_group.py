"""Fix: BLIP-2 stage 1 (``Blip2Qformer.forward``) needs a process group even for one process.

LAVIS 1.0.2's ``Blip2Qformer.forward`` calls ``dist.get_rank()`` and gathers features with
``concat_all_gather`` / ``all_gather_with_grad``, which call
``torch.distributed.get_world_size()``. Without an initialised process group (``python
train.py`` on one CPU, a notebook, a test) these raise. Here the names that module looks up
are replaced by versions that act as rank 0 of a world of one when no group exists, and
defer to the originals when one does (several ranks under ``torch.distributed.run``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as torch_dist

from lavis_ext.compat._patch import Overlay


def _initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def _rank() -> int:
    return torch_dist.get_rank() if _initialized() else 0


def patch_dist(dist_module: Any) -> Overlay:
    """Patch factory for the name ``dist`` in ``blip2_qformer``: ``get_rank`` works without
    a group."""
    return Overlay(dist_module, get_rank=_rank)


def patch_gather(gather: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Patch factory for ``concat_all_gather`` and ``all_gather_with_grad`` in ``blip2_qformer``:
    a world of one gathers its own tensor."""

    def gather_or_self(tensor: torch.Tensor) -> torch.Tensor:
        return gather(tensor) if _initialized() else tensor

    gather_or_self.__name__ = gather.__name__
    gather_or_self.__doc__ = gather.__doc__
    return gather_or_self
