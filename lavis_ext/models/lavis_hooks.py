"""The plugin models' overrides of LAVIS 1.0.2's ``Blip2Base`` / ``BaseModel`` hooks.

``ExpBlipParts`` (``exp_blip.py``) delegates to these, so LAVIS's classes stay stock:

* :func:`autocast_context` for ``maybe_autocast``: LAVIS returns ``torch.cuda.amp.autocast``
  (deprecated, CUDA only) on any non-CPU device and never autocasts on CPU. Here: ``torch.amp``
  for the model's device type; on CPU only for bfloat16 (float16 on CPU is slow or unsupported),
  otherwise LAVIS's own answer (no autocast; an outer context such as the task's run autocast
  then applies).
* ``load_checkpoint_from_config``: ``lavis_ext.runners.checkpoints.load_from_config``
  (``load_pretrained: False`` honoured, files named in errors).
* ``Blip2Qformer.forward`` calls ``dist.get_rank()`` and gathers over the process group, which
  raise in a single plain process: the stage-1 model runs it inside
  ``lavis_ext.runners.distributed.world_of_one``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def autocast_context(device: torch.device, dtype: torch.dtype, stock: Callable[[torch.dtype], Any]) -> Any:
    """The autocast ``maybe_autocast(dtype)`` enters on ``device``; ``stock`` is LAVIS's."""
    if device.type == "cpu":
        if dtype == torch.bfloat16:
            return torch.amp.autocast(device_type="cpu", dtype=torch.bfloat16)
        return stock(dtype)  # LAVIS's answer on CPU: no autocast
    return torch.amp.autocast(device_type=device.type, dtype=dtype)


__all__ = ["autocast_context"]
