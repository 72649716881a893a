import pytest
import torch
from torch.utils.data import Dataset

import lavis_ext  # noqa: F401
from lavis.datasets.datasets.base_dataset import ConcatDataset

from lavis_ext.compat._patch import original


class Items(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)]), "id": str(i)}

    def collater(self, samples):
        return {"x": torch.stack([s["x"] for s in samples]), "id": [s["id"] for s in samples]}


def test_concat_collater_drops_skipped_samples():
    concat = ConcatDataset([Items(2), Items(3)])
    samples = [concat[0], None, concat[3]]
    batch = concat.collater(samples)
    assert batch["id"] == ["0", "1"] and batch["x"].shape == (2, 1)
    with pytest.raises(TypeError):
        original(ConcatDataset, "collater")(concat, samples)
