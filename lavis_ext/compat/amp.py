"""Mixed precision through ``torch.amp`` with the run's device type and a configurable dtype.

LAVIS 1.0.2 hard-codes CUDA for mixed precision: ``RunnerBase.scaler`` builds
``torch.cuda.amp.GradScaler()`` for ``run.amp: True``, the training loop
(``BaseTask._train_inner_loop``) enters ``torch.cuda.amp.autocast``, and
``Blip2Base.maybe_autocast`` returns ``torch.cuda.amp.autocast`` on any non-CPU device. These
are deprecated in current torch, always fp16, and meaningless on CPU.

Here mixed precision follows ``run.amp`` (on/off) and ``run.amp_dtype`` (``float16``, the
default as in LAVIS, or ``bfloat16``):

=========  ==========  =================  =================
device     amp_dtype   autocast           GradScaler
=========  ==========  =================  =================
cuda       float16     cuda, float16      enabled
cuda       bfloat16    cuda, bfloat16     disabled (no-op)
cpu        bfloat16    cpu, bfloat16      disabled (no-op)
cpu        float16     off (warned once)  disabled (no-op)
=========  ==========  =================  =================

With ``run.amp: True`` the runner's scaler is a ``torch.amp.GradScaler`` that is enabled only
for float16 on CUDA; LAVIS's loop treats "scaler is not None" as "use amp", and a disabled
scaler passes losses and optimizer steps through unchanged. The name ``torch`` inside
``lavis.tasks.base_task`` is overlaid so its ``torch.cuda.amp.autocast(enabled=...)`` becomes
``torch.amp.autocast`` for the active runner's device type and dtype (see
``lavis_ext.compat.run_context``). ``maybe_autocast`` keeps LAVIS's
behaviour on GPUs (autocast with the dtype the model asks for) and on CPU autocasts only when
bfloat16 is requested, by the model or by the run (``amp: True, amp_dtype: bfloat16``).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from lavis_ext.compat._patch import Overlay
from lavis_ext.compat.run_context import active_runner

@dataclass(frozen=True)
class AmpPlan:
    """What mixed precision does for one run."""

    device_type: str
    dtype: torch.dtype
    enabled: bool
    use_scaler: bool


_warned_cpu_fp16 = False


def parse_amp_dtype(value: Any) -> torch.dtype:
    """``run.amp_dtype`` as a torch dtype (float16 when unset, as LAVIS always used); the
    names are those of every precision field (``lavis_ext.models.precision``)."""
    from lavis_ext.models import precision  # at call time: compat loads while LAVIS imports

    return precision.amp_dtype(value)


def amp_plan(device: torch.device | str, amp: bool, amp_dtype: Any = None) -> AmpPlan:
    """The autocast/GradScaler settings for ``run.amp``/``run.amp_dtype`` on ``device``."""
    global _warned_cpu_fp16
    device_type = torch.device(device).type
    dtype = parse_amp_dtype(amp_dtype)
    if not amp:
        return AmpPlan(device_type, dtype, enabled=False, use_scaler=False)
    if device_type == "cuda":
        return AmpPlan(device_type, dtype, enabled=True, use_scaler=dtype == torch.float16)
    if dtype == torch.bfloat16:
        return AmpPlan(device_type, dtype, enabled=True, use_scaler=False)
    if not _warned_cpu_fp16:
        logging.warning(
            "run.amp is True with float16 on %s: training in float32 instead; "
            "set run.amp_dtype: bfloat16 for mixed precision there", device_type
        )
        _warned_cpu_fp16 = True
    return AmpPlan(device_type, dtype, enabled=False, use_scaler=False)


def plan_for_runner(runner: Any) -> AmpPlan:
    run_cfg = runner.config.run_cfg
    return amp_plan(runner.device, bool(run_cfg.get("amp", False)), run_cfg.get("amp_dtype", None))


def active_plan() -> AmpPlan | None:
    """The plan of the runner currently training or evaluating in this context, if any."""
    runner = active_runner()
    return None if runner is None else plan_for_runner(runner)


def _scaler(self: Any) -> Any:
    """A ``torch.amp.GradScaler`` when ``run.amp`` is on (enabled only for float16 on CUDA)."""
    if not self.config.run_cfg.get("amp", False):
        return None
    if self._scaler is None:
        plan = plan_for_runner(self)
        self._scaler = torch.amp.GradScaler(plan.device_type, enabled=plan.use_scaler)
    return self._scaler


def _train_loop_autocast(enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True) -> Any:
    """Stands in for ``torch.cuda.amp.autocast`` inside ``lavis.tasks.base_task``."""
    plan = active_plan()
    if plan is None:  # a task used outside a runner: LAVIS's meaning, CUDA only
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        plan = AmpPlan(device_type, dtype, enabled=device_type == "cuda", use_scaler=False)
    on = bool(enabled) and plan.enabled
    if not on:
        return contextlib.nullcontext()
    return torch.amp.autocast(device_type=plan.device_type, dtype=plan.dtype, cache_enabled=cache_enabled)


def _maybe_autocast(self: Any, dtype: torch.dtype = torch.float16) -> Any:
    """LAVIS's behaviour on GPUs; on CPU autocast only for bfloat16 (asked by model or run)."""
    device = self.device
    if device.type != "cpu":
        return torch.amp.autocast(device_type=device.type, dtype=dtype)
    plan = active_plan()
    if plan is not None and plan.enabled and plan.device_type == "cpu":
        return torch.amp.autocast(device_type="cpu", dtype=plan.dtype)
    if dtype == torch.bfloat16:
        return torch.amp.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def patch_scaler(stock: Any) -> property:
    """Patch factory for ``RunnerBase.scaler``."""
    return property(_scaler, doc=_scaler.__doc__)


def patch_train_loop_torch(torch_module: Any) -> Overlay:
    """Patch factory for the name ``torch`` in ``lavis.tasks.base_task``."""
    cuda_amp = Overlay(torch_module.cuda.amp, autocast=_train_loop_autocast)
    return Overlay(torch_module, cuda=Overlay(torch_module.cuda, amp=cuda_amp))


def patch_maybe_autocast(stock: Any) -> Any:
    """Patch factory for ``Blip2Base.maybe_autocast``."""
    return _maybe_autocast
