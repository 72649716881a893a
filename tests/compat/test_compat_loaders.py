"""The runners' training loader pauses 2 s between passes only with worker processes, and
several datasets joined in LAVIS's ConcatDataset survive a skipped (None) sample."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import lavis_ext  # noqa: F401  (registers the plugin)
from lavis.datasets.datasets import dataloader_utils
from lavis.datasets.datasets.base_dataset import ConcatDataset
from lavis.datasets.datasets.dataloader_utils import IterLoader

from lavis_ext.runners.loaders import WorkerAwareIterLoader, build_loader


def _sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(dataloader_utils.time, "sleep", calls.append)
    return calls


def test_no_sleep_between_passes_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _sleeps(monkeypatch)
    loader = WorkerAwareIterLoader(DataLoader(list(range(4)), batch_size=2, num_workers=0))
    batches = [next(loader).tolist() for _ in range(5)]
    assert batches == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]
    assert loader.epoch == 2
    assert calls == []
    stock = IterLoader(DataLoader(list(range(4)), batch_size=2, num_workers=0))
    [next(stock) for _ in range(3)]
    assert calls == [2]  # LAVIS's own loader, left stock, pauses


def test_passes_with_workers_keep_lavis_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _sleeps(monkeypatch)

    class Workers:  # a loader that says it has workers, without starting processes
        num_workers = 2
        sampler = None

        def __iter__(self):
            return iter([torch.tensor([0, 1])])

    loader = WorkerAwareIterLoader(Workers())
    next(loader), next(loader)
    assert calls == [2]


class Items(Dataset):
    def __init__(self, n: int, skip: int | None = None) -> None:
        self.n, self.skip = n, skip

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return None if i == self.skip else {"x": torch.tensor([float(i)]), "id": str(i)}

    def collater(self, samples):
        return {"x": torch.stack([s["x"] for s in samples]), "id": [s["id"] for s in samples]}


def test_concat_of_datasets_drops_skipped_samples() -> None:
    concat = ConcatDataset([Items(2, skip=1), Items(3)])
    loader = build_loader(concat, batch_size=5, num_workers=0, is_train=False,
                          collate_fn=concat.collater, device=torch.device("cpu"), sampler=None,
                          distributed=False)
    batch = next(iter(loader))
    assert batch["id"] == ["0", "0", "1", "2"]
    with pytest.raises(TypeError):  # LAVIS's collater, left stock, fails on the None sample
        concat.collater([concat[0], concat[1]])


def test_a_training_split_smaller_than_a_batch_is_a_clear_error() -> None:
    """LAVIS's loop would divide by the epoch's zero batches (ZeroDivisionError in its logger)."""
    from lavis_ext.errors import InputError

    with pytest.raises(InputError, match=r"9 samples per process, fewer than one batch "
                                         r"\(run.batch_size_train=16"):
        build_loader(list(range(9)), batch_size=16, num_workers=0, is_train=True,
                     collate_fn=None, device=torch.device("cpu"), sampler=None,
                     distributed=False)
    evaluation = build_loader(list(range(9)), batch_size=16, num_workers=0, is_train=False,
                              collate_fn=None, device=torch.device("cpu"), sampler=None,
                              distributed=False)
    assert [len(b) for b in evaluation] == [9]  # evaluation keeps its incomplete batch
