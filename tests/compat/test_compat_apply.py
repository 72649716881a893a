"""apply_all is idempotent and every patch keeps LAVIS's original reachable."""
from __future__ import annotations

import importlib

import lavis_ext.compat as compat
from lavis.common.registry import registry
from lavis.runners.runner_base import RunnerBase
from lavis_ext.compat import _patch
from lavis_ext.compat.optims import SCHEDULERS

MODULES = ("amp", "checkpoints", "distributed", "layer_decay", "loaders", "logger_sync", "optims", "output_dir", "run_context", "runner_model")


def _snapshot() -> dict:
    from lavis.common import dist_utils, logger, optims
    from lavis.datasets.datasets.dataloader_utils import IterLoader
    from lavis.runners.runner_iter import RunnerIter
    from lavis.datasets import data_utils
    from lavis.models.base_model import BaseModel
    from lavis.runners import runner_base
    from lavis.tasks import base_task

    return {
        "create_loaders": RunnerBase.__dict__["create_loaders"],
        "model": RunnerBase.__dict__["model"],
        "scaler": RunnerBase.__dict__["scaler"],
        "optimizer": RunnerBase.__dict__["optimizer"],
        "cosine_lr_schedule": optims.cosine_lr_schedule,
        "iter_next": IterLoader.__dict__["__next__"],
        "iter_save": RunnerIter.__dict__["_save_checkpoint"],
        "train_epoch": RunnerBase.__dict__["train_epoch"],
        "_load_checkpoint": RunnerBase.__dict__["_load_checkpoint"],
        "setup_output_dir": RunnerBase.__dict__["setup_output_dir"],
        "PrefetchLoader": runner_base.PrefetchLoader,
        "dist": runner_base.dist,
        "torch": runner_base.torch,
        "task_torch": base_task.torch,
        "sync": logger.SmoothedValue.__dict__["synchronize_between_processes"],
        "init": dist_utils.init_distributed_mode,
        "from_config": BaseModel.__dict__["load_checkpoint_from_config"],
        "eval_epoch": RunnerBase.__dict__["eval_epoch"],
        "prepare_sample": data_utils.prepare_sample,
        "task_prepare_sample": base_task.prepare_sample,
    }


def test_apply_twice_changes_nothing() -> None:
    before = _snapshot()
    for name in MODULES:
        importlib.import_module(f"lavis_ext.compat.{name}").apply()
    compat._APPLIED = False
    compat.apply_all()
    after = _snapshot()
    assert {k: id(v) for k, v in after.items()} == {k: id(v) for k, v in before.items()}


def test_patches_are_marked_and_originals_are_lavis_code() -> None:
    for name in ("create_loaders", "model", "scaler", "optimizer", "train_epoch", "_load_checkpoint", "setup_output_dir"):
        assert _patch.is_patched(RunnerBase, name), name
        orig = _patch.original(RunnerBase, name)
        func = orig.fget if isinstance(orig, property) else orig
        assert func.__module__ == "lavis.runners.runner_base", name


def test_lr_schedulers_are_registered() -> None:
    for name in SCHEDULERS:
        assert callable(registry.get_lr_scheduler_class(name)), name
