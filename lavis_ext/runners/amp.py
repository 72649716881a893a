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

With ``run.amp: True`` the plugin's runners (``lavis_ext.runners``) give LAVIS's loop a
``torch.amp.GradScaler`` that is enabled only for float16 on CUDA; LAVIS's loop treats "scaler
is not None" as "use amp", and a disabled scaler passes losses and optimizer steps through
unchanged. The plugin's tasks (``lavis_ext.tasks.run``) run each training step under
:func:`autocast_for` with the plan the runner handed them (``bind_run``), so the step autocasts
for the run's device and dtype; the plugin's models (``lavis_ext.models.precision_policy``)
autocast on CPU only for bfloat16. LAVIS's own loop, scaler and ``maybe_autocast`` stay stock.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch


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




def autocast_for(plan: AmpPlan | None) -> Any:
    """The autocast context of ``plan`` (nothing when amp is off or there is no plan)."""
    if plan is None or not plan.enabled:
        return contextlib.nullcontext()
    return torch.amp.autocast(device_type=plan.device_type, dtype=plan.dtype)


def grad_scaler(plan: AmpPlan) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler`` for ``plan``: enabled only for float16 on CUDA."""
    return torch.amp.GradScaler(plan.device_type, enabled=plan.use_scaler)
