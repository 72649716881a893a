"""The plugin's runners: LAVIS's ``RunnerBase`` and ``RunnerIter``, with what CPU runs, resumes
and the paper's recipe need, as overrides of the smallest hooks.

``runner_expblip`` (epochs) and ``runner_expblip_iter`` (iterations) are registered with
LAVIS's registry; a YAML chooses one with ``run.runner``. LAVIS's own runners stay stock
(``docs/compat.md`` lists what a run on them lacks). Each override below says which LAVIS 1.0.2
behaviour it changes:

* ``model``: LAVIS's property returns None when the model is already on the run device (always
  on CPU) and passes ``device_ids`` to DDP on CPU. Replaced, not extended: its body is the bug.
* ``optimizer``: ``run.lr_layer_decay`` groups (``layer_decay.py``), else LAVIS's via super();
  ``run.optimizer_impl`` (``fused`` / ``foreach``) rebuilds it on the same groups with torch's
  faster AdamW kernels (LAVIS always builds the per-tensor loop on CPU).
* ``scaler``: ``torch.amp.GradScaler`` enabled only for float16 on CUDA (``amp.py``).
* ``create_loaders``: no ``PrefetchLoader`` or pinned memory off CUDA, no 2 s pause per pass
  without workers (``loaders.py`` says why super() cannot be used).
* ``_save_checkpoint`` / ``_load_checkpoint`` (both runners, by ``PROGRESS``): atomic, trainable weights only (also for
  ``RunnerIter``), weights-only loads, strict-but-frozen-allowed resume at the right epoch or
  iteration (``checkpoints.py``).
* ``setup_output_dir``: a relative ``run.output_dir`` is taken from the working directory (LAVIS
  puts it inside the installed package), and a second runner in one process works (LAVIS's
  registry refuses to register ``result_dir`` twice).
* ``train`` / ``evaluate``: LAVIS's, inside a process group of one when none exists
  (``distributed.world_of_one``): LAVIS's ``train`` calls ``dist.barrier()`` unguarded.
* the task: a task with ``bind_run`` (the plugin's, ``lavis_ext.tasks.run``) is handed the run's
  device and mixed-precision plan when the runner is built.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from lavis.common.dist_utils import is_main_process
from lavis.common.registry import registry
from lavis.runners.runner_base import RunnerBase
from lavis.runners.runner_iter import RunnerIter

from lavis_ext.errors import InputError
from lavis_ext.runners import loaders
from lavis_ext.runners.amp import AmpPlan, grad_scaler, plan_for_runner
from lavis_ext.runners.checkpoints import restore_training_state, save_runner_checkpoint
from lavis_ext.runners.distributed import check_run_device, world_of_one
from lavis_ext.runners.layer_decay import layer_decay_optimizer
from lavis_ext.runners.optimizer_impl import with_implementation
from lavis_ext.runners.schedulers import COSINE, STEP

RUNNER = "runner_expblip"
RUNNER_ITER = "runner_expblip_iter"

# Registry paths each runner registers (LAVIS raises KeyError when one is registered twice).
RUNNER_PATHS = ("output_dir", "result_dir")


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


class ExpBlipRunnerMixin:
    """The overrides shared by both runners (placed before the LAVIS class)."""

    def __init__(self, cfg: Any, task: Any, model: Any, datasets: Any, job_id: str) -> None:
        check_run_device(cfg.run_cfg)
        super().__init__(cfg=cfg, task=task, model=model, datasets=datasets, job_id=job_id)
        bind_run = getattr(task, "bind_run", None)
        if bind_run is not None:
            bind_run(self)

    @property
    def amp_plan(self) -> AmpPlan:
        """Autocast and GradScaler settings of ``run.amp`` / ``run.amp_dtype`` on this device."""
        return plan_for_runner(self)

    @property
    def model(self) -> torch.nn.Module:
        """The (possibly DDP-wrapped) model on the run device."""
        if not same_device(self._model.device, self.device):
            self._model = self._model.to(self.device)
            self._wrapped_model = None
        if self._wrapped_model is None:
            self._wrapped_model = wrap_for_device(self._model, self.device, bool(self.use_distributed),
                                                  self.config.run_cfg.get("gpu", None))
        return self._wrapped_model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = layer_decay_optimizer(self.unwrap_dist_model(self.model), self.config.run_cfg)
            built = self._optimizer or super().optimizer  # LAVIS's when there is no layer decay
            self._optimizer = with_implementation(built, self.config.run_cfg)
        return super().optimizer

    @property
    def lr_scheduler(self) -> Any:
        if self._lr_sched is None:
            name = self.config.run_cfg.lr_sched
            scaled = any(g.get("lr_scale", 1.0) != 1.0 for g in self.optimizer.param_groups)
            cls = registry.get_lr_scheduler_class(name)
            if scaled and not getattr(cls, "honours_lr_scale", False):
                raise InputError(
                    f"run.lr_sched={name!r} writes one lr into every parameter group, which undoes "
                    f"run.lr_layer_decay; use {COSINE!r} or {STEP!r}")
        return super().lr_scheduler

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        if not self.config.run_cfg.get("amp", False):
            return None
        if self._scaler is None:
            self._scaler = grad_scaler(self.amp_plan)
        return self._scaler

    def setup_output_dir(self) -> None:
        run_cfg = self.config.run_cfg
        output_dir = run_cfg.get("output_dir", None)
        if not output_dir:
            raise InputError("run.output_dir is not set: give the folder for checkpoints and logs")
        # An absolute path: LAVIS joins it to its library root, which keeps an absolute one.
        run_cfg.output_dir = os.path.abspath(os.path.expanduser(str(output_dir)))
        for name in RUNNER_PATHS:
            registry.mapping["paths"].pop(name, None)
        super().setup_output_dir()

    def create_loaders(self, datasets: Sequence[Any], num_workers: int, batch_sizes: Sequence[int],
                       is_trains: Sequence[bool], collate_fns: Sequence[Any],
                       dataset_ratios: Any = None) -> list[Any]:
        # Not super(): LAVIS's body builds DataLoader/PrefetchLoader/IterLoader by module-global
        # name in a nested function (loaders.py); this builds the same kinds of loader.
        def one(dataset: Any, batch_size: int, is_train: bool, collate_fn: Any) -> Any:
            loaders.check_map_style(dataset, "train" if is_train else "evaluation")
            sampler = (loaders.distributed_sampler(dataset, is_train, self.use_dist_eval_sampler)
                       if self.use_distributed else None)
            return loaders.build_loader(dataset, batch_size=batch_size, num_workers=num_workers,
                                        is_train=is_train, collate_fn=collate_fn, device=self.device,
                                        sampler=sampler, distributed=bool(self.use_distributed))

        built = []
        for dataset, batch_size, is_train, collate_fn in zip(datasets, batch_sizes, is_trains, collate_fns):
            if isinstance(dataset, (list, tuple)):  # several datasets of one split, mixed by ratio
                parts = [one(d, batch_size, is_train, collate_fn[i]) for i, d in enumerate(dataset)]
                built.append(loaders.multi_loader(parts, dataset_ratios))
            else:
                built.append(one(dataset, batch_size, is_train, collate_fn))
        return built

    # (checkpoint key, added on resume, runner attributes of the end and of the start)
    PROGRESS: tuple[str, int, str, str]

    def _save_checkpoint(self, progress: int, is_best: bool = False) -> None:
        if is_main_process():
            save_runner_checkpoint(self, self.PROGRESS[0], progress, is_best)

    def _load_checkpoint(self, url_or_filename: Any) -> None:
        """Restore model, optimizer, scaler and where training continues."""
        key, step, end_attr, start_attr = self.PROGRESS
        path, checkpoint = restore_training_state(self, url_or_filename, key)
        start, end = int(checkpoint[key]) + step, getattr(self, end_attr)
        if start >= end:
            raise InputError(
                f"run.resume_ckpt_path: {path} was saved at {key} {checkpoint[key]}, the end of "
                f"run.{end_attr}={end}; raise run.{end_attr} to train further")
        logging.info("Resumed from %s: continuing at %s %d", path, key, start)
        setattr(self, start_attr, start)

    def train(self) -> None:
        with world_of_one(self.device):
            super().train()

    def evaluate(self, cur_epoch: Any = "best", skip_reload: bool = False) -> Any:
        with world_of_one(self.device):
            return super().evaluate(cur_epoch=cur_epoch, skip_reload=skip_reload)


@registry.register_runner(RUNNER)
class ExpBlipRunner(ExpBlipRunnerMixin, RunnerBase):
    """LAVIS's epoch-based runner with the plugin's overrides; resumes at the next epoch."""

    PROGRESS = ("epoch", 1, "max_epoch", "start_epoch")


@registry.register_runner(RUNNER_ITER)
class ExpBlipRunnerIter(ExpBlipRunnerMixin, RunnerIter):
    """LAVIS's iteration-based runner with the plugin's overrides.

    The saved ``iters`` is the end (exclusive) of the inner epoch just finished, so training
    resumes there (LAVIS adds 1, which shifts every later inner epoch by one iteration).
    """

    PROGRESS = ("iters", 0, "max_iters", "start_iters")
