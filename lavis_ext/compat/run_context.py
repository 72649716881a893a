"""Know which runner is training or evaluating, and keep its batches on its device.

LAVIS passes the run device down by hand, and not everywhere: ``RunnerBase.eval_epoch`` calls
``task.evaluation(model, data_loader)`` without ``cuda_enabled``, and ``BaseTask.evaluation``
defaults to ``cuda_enabled=True``, so ``prepare_sample`` moves every evaluation batch to CUDA:
evaluating (``evaluate.py``, or validation during training) fails on a CPU machine, and on a GPU
machine with ``run.device: cpu`` the batches leave the model's device.

``RunnerBase.train_epoch``, ``RunnerBase.eval_epoch`` and ``RunnerIter.train_iters`` are wrapped
so that, while they run, :func:`active_runner` returns the runner (``lavis_ext.compat.amp``
reads the run's mixed-precision settings from it). ``prepare_sample`` (in
``lavis.datasets.data_utils`` and in the LAVIS modules that imported it by name) moves a batch
to CUDA exactly when the active runner's device is CUDA; with no active runner it keeps LAVIS's
behaviour.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from typing import Any, Iterator

from lavis_ext.compat._patch import replace

_RUNNER: contextvars.ContextVar[Any] = contextvars.ContextVar("lavis_ext_active_runner", default=None)

# (class path, method) pairs during which a runner is "active"
RUNNER_METHODS = (
    ("lavis.runners.runner_base", "RunnerBase", "train_epoch"),
    ("lavis.runners.runner_base", "RunnerBase", "eval_epoch"),
    ("lavis.runners.runner_iter", "RunnerIter", "train_iters"),
)


def active_runner() -> Any:
    """The runner whose training or evaluation step is running in this context, or None."""
    return _RUNNER.get()


@contextlib.contextmanager
def running(runner: Any) -> Iterator[Any]:
    """Make ``runner`` the active runner for the body (what the wrapped runner methods do)."""
    token = _RUNNER.set(runner)
    try:
        yield runner
    finally:
        _RUNNER.reset(token)


def _within_runner(method: Any) -> Any:
    @functools.wraps(method)
    def run_as_active_runner(self: Any, *args: Any, **kwargs: Any) -> Any:
        with running(self):
            return method(self, *args, **kwargs)

    return run_as_active_runner


def _make_prepare_sample(prepare_sample: Any) -> Any:
    @functools.wraps(prepare_sample)
    def prepare_sample_on_run_device(samples: Any, cuda_enabled: bool = True) -> Any:
        runner = _RUNNER.get()
        if runner is not None:
            cuda_enabled = runner.device.type == "cuda"
        return prepare_sample(samples, cuda_enabled=cuda_enabled)

    return prepare_sample_on_run_device


def apply() -> None:
    import importlib

    from lavis.datasets import data_utils

    stock = data_utils.prepare_sample
    new = _make_prepare_sample(stock)
    if replace(data_utils, "prepare_sample", new):
        for name, module in list(sys.modules.items()):
            if name.startswith("lavis.") and getattr(module, "prepare_sample", None) is stock:
                replace(module, "prepare_sample", new)
    for module_name, class_name, method in RUNNER_METHODS:
        cls = getattr(importlib.import_module(module_name), class_name)
        if method in cls.__dict__:
            replace(cls, method, _within_runner(cls.__dict__[method]))
