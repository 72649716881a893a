"""Data loaders for the plugin's runners: prefetch and pinned memory only for CUDA runs.

LAVIS 1.0.2's ``RunnerBase.create_loaders`` builds every map-style loader with
``pin_memory=True`` and wraps it in ``PrefetchLoader``, whose constructor creates a
``torch.cuda.Stream()``: on a machine without a GPU that raises at loader creation, and on a GPU
machine with ``run.device: cpu`` it would move batches to a device the model is not on. Its
training loaders are ``IterLoader``s, whose ``__next__`` sleeps 2 s at each pass over the data
"to prevent a deadlock" between worker processes; with ``num_workers: 0`` there are no workers,
and the sleep is pure loss (about 70 s of the demo's 8.5 minutes).

The runners' ``create_loaders`` (``lavis_ext.runners.base``) builds loaders with
:func:`build_loader` instead of calling ``super()``: LAVIS's method constructs ``DataLoader``,
``PrefetchLoader`` and ``IterLoader`` by their module-global names inside a nested function, so
no hook of the class can change what it builds without replacing those names in LAVIS's module
(a global patch). :class:`WorkerAwareIterLoader` is LAVIS's ``IterLoader`` and defers to it
whenever the loader has workers. Several training datasets of one split are joined in LAVIS's
``ConcatDataset``, whose collater fails on a sample skipped because its image failed to decode
(``None``): :func:`dropping_skipped` drops those first.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lavis.datasets.datasets.base_dataset import ConcatDataset
from lavis.datasets.datasets.dataloader_utils import IterLoader, MultiIterLoader, PrefetchLoader

from lavis_ext.errors import InputError


def _num_workers(loader: Any) -> int:
    """Worker processes behind a (possibly prefetch-wrapped) loader; 1 when unknown."""
    while loader is not None and not hasattr(loader, "num_workers"):
        loader = getattr(loader, "loader", None)
    return 1 if loader is None else int(loader.num_workers)


class WorkerAwareIterLoader(IterLoader):
    """LAVIS's endless training loader, without its 2 s pause when there are no workers."""

    def __next__(self) -> Any:
        if _num_workers(self._dataloader) > 0:
            return super().__next__()  # workers: LAVIS's pause against their deadlock
        batch = next(self.iter_loader, _END)
        if batch is _END:
            self._begin_next_pass()
            batch = next(self.iter_loader)
        return batch

    def _begin_next_pass(self) -> None:
        self._epoch += 1
        set_epoch = getattr(getattr(self._dataloader, "sampler", None), "set_epoch", None)
        if self._use_distributed and set_epoch is not None:
            set_epoch(self._epoch)
        self.iter_loader = iter(self._dataloader)


_END = object()


def dropping_skipped(collate_fn: Callable | None) -> Callable | None:
    """``collate_fn`` without the ``None`` samples (an image that failed to decode).

    The plugin's datasets drop them in their own collater, but several training datasets are
    joined in LAVIS's ``ConcatDataset``, whose collater reads every sample's keys first.
    """
    if collate_fn is None:
        return None

    def collate(samples: list[Any]) -> Any:
        return collate_fn([sample for sample in samples if sample is not None])

    return collate


def build_loader(dataset: Dataset, *, batch_size: int, num_workers: int, is_train: bool,
                 collate_fn: Callable | None, device: torch.device, sampler: Any,
                 distributed: bool) -> Any:
    """One map-style split's loader: ``PrefetchLoader`` and pinned memory only on CUDA,
    an endless :class:`WorkerAwareIterLoader` for training (as LAVIS's runners expect)."""
    on_cuda = device.type == "cuda" and torch.cuda.is_available()
    if isinstance(dataset, ConcatDataset):
        collate_fn = dropping_skipped(collate_fn)
    loader: Any = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                             pin_memory=on_cuda, sampler=sampler,
                             shuffle=is_train and sampler is None, collate_fn=collate_fn,
                             drop_last=is_train)
    if is_train and len(loader) == 0:
        # LAVIS would divide by the zero batches of an epoch (ZeroDivisionError in its logger).
        per_rank = len(sampler) if sampler is not None else len(dataset)
        raise InputError(
            f"the training split has {per_rank} samples per process, fewer than one batch "
            f"(run.batch_size_train={batch_size}; the last incomplete batch is dropped): "
            "lower run.batch_size_train or add training data")
    if on_cuda:
        loader = PrefetchLoader(loader)
    return WorkerAwareIterLoader(loader, use_distributed=distributed) if is_train else loader


def distributed_sampler(dataset: Dataset, is_train: bool, keep_for_eval: bool) -> Any:
    """LAVIS's sampler choice: a ``DistributedSampler`` over all ranks (for evaluation only
    when ``run.use_dist_eval_sampler`` is on)."""
    from lavis.common.dist_utils import get_rank, get_world_size

    if not (is_train or keep_for_eval):
        return None
    return DistributedSampler(dataset, shuffle=is_train, num_replicas=get_world_size(), rank=get_rank())


def check_map_style(dataset: Any, split: str) -> None:
    """Refuse iterable-style data (webdataset pipelines): only map-style data is built here."""
    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        raise TypeError(f"split {split!r}: {type(dataset).__name__} is an iterable-style dataset; "
                        "the lavis_ext runners build map-style loaders only (use run.runner: "
                        "runner_base for webdataset pipelines, on CUDA)")


def multi_loader(loaders: Sequence[Any], ratios: Any) -> MultiIterLoader:
    return MultiIterLoader(loaders=list(loaders), ratios=ratios)
