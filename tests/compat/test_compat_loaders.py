"""IterLoader's 2 s sleep at each pass over the data happens only with worker processes."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import lavis_ext  # noqa: F401  (applies the fixes)
from lavis.datasets.datasets import dataloader_utils
from lavis.datasets.datasets.dataloader_utils import IterLoader


def _sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(dataloader_utils.time, "sleep", calls.append)
    return calls


def test_no_sleep_between_passes_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _sleeps(monkeypatch)
    loader = IterLoader(DataLoader(list(range(4)), batch_size=2, num_workers=0))
    batches = [next(loader).tolist() for _ in range(5)]
    assert batches == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]
    assert loader.epoch == 2
    assert calls == []


def test_passes_with_workers_keep_lavis_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _sleeps(monkeypatch)

    class Workers:  # a loader that says it has workers, without starting processes
        num_workers = 2
        sampler = None

        def __iter__(self):
            return iter([torch.tensor([0, 1])])

    loader = IterLoader(Workers())
    next(loader), next(loader)
    assert calls == [2]
