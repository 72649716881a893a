"""What the LAVIS runner iterates in a probe run: labelled features or labelled images.

The task wraps every dataset the config builds. In linear mode the wrapper holds the frozen
encoder's features (filled in once the model exists, see ``features.py``); in fine-tuning
mode it yields the images. Either way each item carries its probe target, so the runner's own
loop trains it, with its DistributedSampler, amp, gradient accumulation and logging.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from lavis_ext.datasets.facial_datasets import MAX_REPLACEMENT_TRIES, collate_readable
from lavis_ext.tasks.probe.labels import Encoded


class _Labelled(Dataset):
    """Items ``positions[i]`` of a source dataset, with their labels."""

    def __init__(self, name: str, split: str, image_ids: Sequence[str], encoded: Encoded) -> None:
        self.name, self.split = name, split
        self.positions = list(encoded.positions)
        self.image_ids = [str(image_ids[p]) for p in self.positions]
        self.targets = torch.from_numpy(encoded.targets)
        self.masks = torch.from_numpy(encoded.masks)
        self.skipped: Counter = Counter(encoded.skipped)

    def __len__(self) -> int:
        return len(self.positions)

    def _labels(self, i: int) -> dict[str, Any]:
        return {"probe_target": self.targets[i], "probe_mask": self.masks[i],
                "image_id": self.image_ids[i]}


class LabelledFeatures(_Labelled):
    """Features of a frozen encoder with probe targets; empty until ``attach`` fills it."""

    def __init__(self, name: str, split: str, image_ids: Sequence[str], encoded: Encoded,
                 images: Any) -> None:
        super().__init__(name, split, image_ids, encoded)
        self.images = images  # the source dataset, encoded once by the task
        self.features: torch.Tensor | None = None

    def attach(self, positions: Sequence[int], features: torch.Tensor) -> None:
        """Keep the items whose features were computed (unreadable images are dropped)."""
        if len(positions) != len(features):
            raise ValueError(f"{len(positions)} positions but {len(features)} feature rows")
        row = {p: k for k, p in enumerate(positions)}
        keep = [i for i, p in enumerate(self.positions) if p in row]
        lost = len(self.positions) - len(keep)
        if lost:
            self.skipped["unreadable image"] += lost
        self.positions = [self.positions[i] for i in keep]
        self.image_ids = [self.image_ids[i] for i in keep]
        self.targets, self.masks = self.targets[keep], self.masks[keep]
        self.features = features[[row[p] for p in self.positions]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.features is None:
            raise RuntimeError(f"{self.name}/{self.split}: probe features are not extracted "
                               "yet; the probe task fills them when it builds the model")
        return {"features": self.features[i], **self._labels(i)}

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(samples)


class LabelledImages(_Labelled):
    """Images of the source dataset with probe targets, for fine-tuning the encoder."""

    def __init__(self, name: str, split: str, image_ids: Sequence[str], encoded: Encoded,
                 images: Any) -> None:
        super().__init__(name, split, image_ids, encoded)
        self.images = images

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        item = self.images[self.positions[i]]
        if item is None:  # unreadable image: the collater drops it
            return None
        return {"image": item["image"], **self._labels(i)}

    def collater(self, samples: list[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_readable(self, samples, lambda: (
            f"{self.name}/{self.split}: {MAX_REPLACEMENT_TRIES} images in a row could not be "
            "read; check the images root"))
