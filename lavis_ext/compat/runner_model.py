"""``RunnerBase.model`` always returns the model, DDP-wrapped when distributed.

In LAVIS 1.0.2 the property only builds the wrapped model when it has to *move* the model:
a model that was built on the run device already (always the case on CPU) leaves
``_wrapped_model`` as ``None`` and training fails with ``'NoneType' object has no attribute
'train'``. It also always passes ``device_ids=[gpu]`` to ``DistributedDataParallel``, which is
wrong for CPU (gloo) processes: there DDP must be built without ``device_ids``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel


def wrap_for_device(model: torch.nn.Module, device: torch.device, distributed: bool, gpu: Any) -> torch.nn.Module:
    """DDP on CUDA pinned to ``gpu``; DDP on CPU without device ids; the model itself otherwise."""
    if not distributed:
        return model
    if device.type == "cuda":
        index = device.index if device.index is not None else (int(gpu) if gpu is not None else torch.cuda.current_device())
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` count as the same place (LAVIS configs say ``device: cuda``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _model(self: Any) -> torch.nn.Module:
    """The (possibly DDP-wrapped) model on the run device."""
    if not same_device(self._model.device, self.device):
        self._model = self._model.to(self.device)
        self._wrapped_model = None
    if self._wrapped_model is None:
        self._wrapped_model = wrap_for_device(
            self._model, self.device, bool(self.use_distributed), self.config.run_cfg.get("gpu", None)
        )
    return self._wrapped_model


def patch_model(stock: Any) -> property:
    """Patch factory for ``RunnerBase.model``."""
    return property(_model, doc=_model.__doc__)
