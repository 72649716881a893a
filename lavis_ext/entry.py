"""LAVIS-style entry points (train, evaluate) with the lavis_ext plugin registered.

The repository's ``train.py`` and ``evaluate.py`` are thin wrappers around this module.

Behaves like the ``train.py`` of the LAVIS repository:

    python train.py --cfg-path my_run.yaml [--options run.max_epoch=2 ...]
    python -m torch.distributed.run --nproc_per_node=2 train.py --cfg-path my_run.yaml

``--options`` takes ``key=value`` overrides merged over the YAML. The run is seeded with
``run.seed + rank``; the runner is the class registered under ``run.runner``
(``runner_expblip``, the plugin's, when unset; ``runner_base`` is LAVIS's stock runner). ``lavis_ext`` is imported first, so its models, datasets, tasks, runners
and schedulers are registered. The process group is started by
``lavis_ext.runners.distributed.start_process_group`` (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Any, Sequence

import lavis_ext  # noqa: F401  (first: registers the plugin and applies lavis_ext.compat)

import numpy as np
import torch
import torch.backends.cudnn as cudnn
import torch.distributed as dist

import lavis.tasks as tasks
from lavis.common.config import Config
from lavis.common.dist_utils import get_rank
from lavis.common.logger import setup_logger
from lavis.common.registry import registry
from lavis.common.utils import now
from lavis_ext.errors import InputError
from lavis_ext.runners.distributed import shared_value, start_process_group


def parse_args(argv: Sequence[str] | None = None, description: str = "Training") -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg-path", required=True, help="path to the run's YAML configuration")
    parser.add_argument(
        "--options",
        nargs="+",
        help="overrides merged over the YAML, as key=value pairs (e.g. run.max_epoch=2 run.device=cpu)",
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(args.cfg_path):
        parser.error(f"--cfg-path: configuration file not found: {os.path.abspath(args.cfg_path)}")
    return args


def setup_seeds(cfg: Config) -> None:
    """Seed Python, NumPy and torch with ``run.seed + rank`` (different data order per rank)."""
    seed = int(cfg.run_cfg.get("seed", 42)) + get_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cudnn.benchmark = False
    cudnn.deterministic = True


DEFAULT_RUNNER = "runner_expblip"


def get_runner_class(cfg: Config) -> type:
    # Unset: the plugin's runner, so a YAML written for lavis_ext's train.py keeps working on
    # CPU; `run.runner: runner_base` asks for LAVIS's stock runner (docs/compat.md).
    name = cfg.run_cfg.get("runner", None) or DEFAULT_RUNNER
    runner_cls = registry.get_runner_class(name)
    if runner_cls is None:
        known = ", ".join(sorted(registry.mapping["runner_name_mapping"]))
        raise InputError(f"run.runner={name!r} is not a registered runner (known: {known})")
    return runner_cls


def build_model(task: Any, cfg: Config) -> Any:
    """``task.build_model(cfg)`` for the run's device: ``run.device`` reaches the model as
    ``model.device`` (unless the model config sets one), so its precisions follow the device
    it will train on (``lavis_ext.models.precision``). The config the runner saves is left as
    written."""
    from omegaconf import OmegaConf

    model_cfg = cfg.model_cfg
    if model_cfg.get("device") is not None:
        return task.build_model(cfg)
    OmegaConf.update(model_cfg, "device", str(cfg.run_cfg.get("device", "cpu")),
                     force_add=True)
    try:
        return task.build_model(cfg)
    finally:
        del model_cfg["device"]


def build_runner(args: argparse.Namespace) -> Any:
    """Config, process group, seeds, logger, task, datasets, model and runner, in LAVIS's order."""
    job_id = now()  # taken before start-up, then rank 0's value is shared by all ranks
    cfg = Config(args)
    start_process_group(cfg.run_cfg)
    job_id = shared_value(job_id)
    setup_seeds(cfg)
    setup_logger()
    cfg.pretty_print()

    task = tasks.setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = build_model(task, cfg)
    return get_runner_class(cfg)(cfg=cfg, job_id=job_id, task=task, model=model, datasets=datasets)


def run(argv: Sequence[str] | None, action: str, description: str) -> int:
    started_group = not (dist.is_available() and dist.is_initialized())
    try:
        runner = build_runner(parse_args(argv, description))
        if action == "train":
            runner.train()
        else:
            runner.evaluate(skip_reload=True)
    finally:
        if started_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """Train as configured; ``argv`` defaults to the command line."""
    return run(argv, "train", "Training")


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Evaluate as configured (``runner.evaluate(skip_reload=True)`` on ``run.test_splits``)."""
    return run(argv, "evaluate", "Evaluation")


if __name__ == "__main__":
    # python -m lavis_ext.entry {train,evaluate} --cfg-path ... (for torch.distributed.run -m)
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "evaluate"):
        sys.exit("usage: python -m lavis_ext.entry {train,evaluate} --cfg-path CFG [--options ...]")
    action = sys.argv.pop(1)
    sys.exit(train_main() if action == "train" else evaluate_main())
