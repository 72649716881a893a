"""Fix: BLIP-2 stage 1 (``Blip2Qformer.forward``) needs a process group even for one process.

LAVIS 1.0.2's ``Blip2Qformer.forward`` calls ``dist.get_rank()`` and gathers features with
``concat_all_gather`` / ``all_gather_with_grad``, which call
``torch.distributed.get_world_size()``. Without an initialised process group (``python
train.py`` on one CPU, a notebook, a test) these raise. Here the names that module looks up
are replaced by versions that act as rank 0 of a world of one when no group exists, and
defer to the originals when one does (several ranks under ``torch.distributed.run``).
"""
from __future__ import annotations

import types

import torch
import torch.distributed as torch_dist


def _initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def _rank() -> int:
    return torch_dist.get_rank() if _initialized() else 0


def apply() -> None:
    from lavis.models import base_model
    from lavis.models.blip2_models import blip2_qformer

    if getattr(blip2_qformer, "_lavis_ext_process_group", False):
        return
    gather, gather_with_grad = base_model.concat_all_gather, base_model.all_gather_with_grad

    def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
        return gather(tensor) if _initialized() else tensor

    def all_gather_with_grad(tensors: torch.Tensor) -> torch.Tensor:
        return gather_with_grad(tensors) if _initialized() else tensors

    # A namespace that answers like torch.distributed, with get_rank safe without a group.
    shim = types.SimpleNamespace(**{k: getattr(torch_dist, k) for k in dir(torch_dist)
                                    if not k.startswith("__")})
    shim.get_rank = _rank
    blip2_qformer.dist = shim
    blip2_qformer.concat_all_gather = concat_all_gather
    blip2_qformer.all_gather_with_grad = all_gather_with_grad
    blip2_qformer._lavis_ext_process_group = True
