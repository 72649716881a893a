"""Fix: LAVIS's ``ConcatDataset.collater`` crashes on a skipped (None) sample.

A run YAML that lists several training datasets makes the runner concatenate them with
``lavis.datasets.datasets.base_dataset.ConcatDataset``, whose collater iterates over every
sample's keys. lavis_ext datasets return ``None`` for an image that fails to decode (so a
multi-day run survives one bad file); the stock collater then raises ``TypeError: 'NoneType'
object is not iterable``. Dropped samples are filtered out first here.
"""
from __future__ import annotations

from typing import Any


def patch_collater(stock: Any) -> Any:
    """Patch factory for ``ConcatDataset.collater``: drop skipped samples, then collate."""

    def collater(self: Any, samples: list[Any]) -> Any:
        return stock(self, [s for s in samples if s is not None])

    return collater
