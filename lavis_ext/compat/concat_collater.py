"""Fix: LAVIS's ``ConcatDataset.collater`` crashes on a skipped (None) sample.

A run YAML that lists several training datasets makes the runner concatenate them with
``lavis.datasets.datasets.base_dataset.ConcatDataset``, whose collater iterates over every
sample's keys. lavis_ext datasets return ``None`` for an image that fails to decode (so a
multi-day run survives one bad file); the stock collater then raises ``TypeError: 'NoneType'
object is not iterable``. Dropped samples are filtered out first here.
"""
from __future__ import annotations

from typing import Any

from lavis_ext.compat._patch import replace


def apply() -> None:
    from lavis.datasets.datasets.base_dataset import ConcatDataset

    original = ConcatDataset.collater

    def collater(self: Any, samples: list[Any]) -> Any:
        return original(self, [s for s in samples if s is not None])

    replace(ConcatDataset, "collater", collater)
