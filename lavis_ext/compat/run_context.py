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
from typing import Any, Iterator

_RUNNER: contextvars.ContextVar[Any] = contextvars.ContextVar("lavis_ext_active_runner", default=None)

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


def patch_runner_method(method: Any) -> Any:
    """Patch factory for the runners' ``train_epoch``, ``eval_epoch`` and ``train_iters``."""

    @functools.wraps(method)
    def run_as_active_runner(self: Any, *args: Any, **kwargs: Any) -> Any:
        with running(self):
            return method(self, *args, **kwargs)

    return run_as_active_runner


def patch_prepare_sample(prepare_sample: Any) -> Any:
    """Patch factory for ``prepare_sample`` (in ``data_utils`` and where it was imported by
    name)."""

    @functools.wraps(prepare_sample)
    def prepare_sample_on_run_device(samples: Any, cuda_enabled: bool = True) -> Any:
        runner = _RUNNER.get()
        if runner is not None:
            cuda_enabled = runner.device.type == "cuda"
        return prepare_sample(samples, cuda_enabled=cuda_enabled)

    return prepare_sample_on_run_device
