"""Learning-rate schedulers that honour a parameter group's ``lr_scale``.

LAVIS 1.0.2's schedulers (``linear_warmup_cosine_lr``, ``linear_warmup_step_lr`` in
``lavis.common.optims``) write one lr into every parameter group at each step, so the
per-depth scales of ``run.lr_layer_decay`` (``lavis_ext.runners.layer_decay``) would be
overwritten. These subclasses run LAVIS's step, then multiply each group's lr by its
``lr_scale`` (default 1: a run without layer decay sees exactly LAVIS's rates). They are
registered under their own names; the project's YAMLs name them in ``run.lr_sched``.
"""
from __future__ import annotations

from typing import Any

from lavis.common.optims import LinearWarmupCosineLRScheduler, LinearWarmupStepLRScheduler
from lavis.common.registry import registry

COSINE = "expblip_linear_warmup_cosine_lr"
STEP = "expblip_linear_warmup_step_lr"


def apply_lr_scales(optimizer: Any) -> None:
    """Scale the lr LAVIS's schedule wrote into each group by the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


class LrScaleMixin:
    """Placed before a LAVIS scheduler: its step, then each group's ``lr_scale``."""

    honours_lr_scale = True  # the runners refuse other schedulers with run.lr_layer_decay

    def step(self, cur_epoch: int, cur_step: int) -> None:
        super().step(cur_epoch, cur_step)
        apply_lr_scales(self.optimizer)


@registry.register_lr_scheduler(COSINE)
class ScaledWarmupCosineLRScheduler(LrScaleMixin, LinearWarmupCosineLRScheduler):
    """``linear_warmup_cosine_lr`` with per-group ``lr_scale``."""


@registry.register_lr_scheduler(STEP)
class ScaledWarmupStepLRScheduler(LrScaleMixin, LinearWarmupStepLRScheduler):
    """``linear_warmup_step_lr`` with per-group ``lr_scale``."""
