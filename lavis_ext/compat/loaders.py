"""Prefetch batches to the GPU only when the run device is CUDA.

``RunnerBase.create_loaders`` wraps every map-style loader in ``PrefetchLoader``, whose
constructor creates a ``torch.cuda.Stream()`` and whose iterator moves each batch to CUDA.
On a machine without a GPU that raises at loader creation; on a GPU machine with
``run.device: cpu`` it would move batches to a device the model is not on. The patch replaces
the name ``PrefetchLoader`` inside ``lavis.runners.runner_base`` with a factory that returns
the plain loader unless the runner that is building loaders runs on CUDA.

The same method builds every ``DataLoader`` with ``pin_memory=True``, which current torch warns
about on every loader when there is no accelerator (and which only helps host-to-GPU copies).
The name ``DataLoader`` in that module becomes a factory that keeps ``pin_memory`` for CUDA runs
and drops it otherwise.

``IterLoader.__next__`` (every training loader of both runners) sleeps 2 s at each pass over
the data, "to prevent a deadlock" between worker processes. With ``num_workers: 0`` there are
no workers, and the sleep is pure loss: a small data set at CPU speed changes pass every
minute or so (70 s of the demo's 8.5 minutes). The replacement sleeps only when the loader
has worker processes.
"""
from __future__ import annotations

import contextvars
import functools
from typing import Any

import torch

_RUN_DEVICE: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "lavis_ext_loader_device", default=None
)


def _wants_prefetch() -> bool:
    device = _RUN_DEVICE.get()
    if device is None:  # called outside a runner: prefetch only if there is a GPU at all
        return torch.cuda.is_available()
    return device.type == "cuda" and torch.cuda.is_available()


def patch_prefetch_loader(prefetch_cls: type) -> Any:
    """Patch factory for the name ``PrefetchLoader`` in ``lavis.runners.runner_base``."""

    def prefetch_if_cuda(loader: Any) -> Any:
        """``PrefetchLoader(loader)`` on CUDA runs, ``loader`` itself otherwise."""
        return prefetch_cls(loader) if _wants_prefetch() else loader

    return prefetch_if_cuda


def patch_dataloader(dataloader_cls: type) -> Any:
    """Patch factory for the name ``DataLoader`` in ``lavis.runners.runner_base``."""

    def dataloader_pinned_on_cuda(*args: Any, **kwargs: Any) -> Any:
        """``DataLoader(...)`` with ``pin_memory`` only where batches go to a GPU."""
        if kwargs.get("pin_memory") and not _wants_prefetch():
            kwargs["pin_memory"] = False
        return dataloader_cls(*args, **kwargs)

    return dataloader_pinned_on_cuda


def patch_create_loaders(create_loaders: Any) -> Any:
    """Patch factory for ``RunnerBase.create_loaders``."""

    @functools.wraps(create_loaders)
    def create_loaders_on_run_device(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _RUN_DEVICE.set(self.device)
        try:
            return create_loaders(self, *args, **kwargs)
        finally:
            _RUN_DEVICE.reset(token)

    return create_loaders_on_run_device


def _num_workers(loader: Any) -> int:
    """Worker processes behind a (possibly prefetch-wrapped) loader; 1 when unknown."""
    while loader is not None and not hasattr(loader, "num_workers"):
        loader = getattr(loader, "loader", None)
    return 1 if loader is None else int(loader.num_workers)


def patch_iter_next(original_next: Any) -> Any:
    """Patch factory for ``IterLoader.__next__``."""

    @functools.wraps(original_next)
    def __next__(self: Any) -> Any:
        if _num_workers(self._dataloader) > 0:
            return original_next(self)
        try:
            return next(self.iter_loader)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader, "sampler", None)
            if hasattr(sampler, "set_epoch") and self._use_distributed:
                sampler.set_epoch(self._epoch)
            self.iter_loader = iter(self._dataloader)
            return next(self.iter_loader)

    return __next__
