"""What the plugin's tasks take from the runner that runs them: the device and the amp plan.

LAVIS 1.0.2's ``BaseTask`` does not know the run device or its mixed precision: its train loop
enters ``torch.cuda.amp.autocast`` whatever the device and dtype, and ``RunnerBase.eval_epoch``
calls ``task.evaluation(model, data_loader)`` without ``cuda_enabled``, whose default True makes
``prepare_sample`` move every evaluation batch to CUDA (fails on CPU machines, and leaves the
model's device for ``run.device: cpu`` on GPU hosts).

The plugin's runners (``lavis_ext.runners``) call :meth:`RunBoundTask.bind_run` when they are
built; the task then autocasts each training step for the run's device and ``run.amp_dtype``
and evaluates on the run device. Passed explicitly, per task object: no global state. A task
used without a plugin runner behaves as LAVIS's.
"""
from __future__ import annotations

from typing import Any

import torch

from lavis_ext.runners.amp import AmpPlan, autocast_for


class RunBoundTask:
    """Mixin placed before LAVIS's ``BaseTask`` in the plugin's tasks."""

    run_device: torch.device | None = None
    amp_plan: AmpPlan | None = None

    def bind_run(self, runner: Any) -> None:
        """Take the run's device and mixed-precision plan (called by the plugin's runners)."""
        self.run_device = torch.device(runner.device)
        self.amp_plan = runner.amp_plan

    def train_step(self, model: Any, samples: Any) -> Any:
        # LAVIS's loop wraps this call in torch.cuda.amp.autocast (CUDA, float16 only); the
        # context entered here is innermost, so it decides for the run's device and dtype.
        with autocast_for(self.amp_plan):
            return super().train_step(model, samples)

    def evaluation(self, model: Any, data_loader: Any, cuda_enabled: bool = True) -> Any:
        if self.run_device is not None:
            cuda_enabled = self.run_device.type == "cuda"
        return super().evaluation(model, data_loader, cuda_enabled=cuda_enabled)
