"""Probe targets from annotation records: which classes, and each image's label or why not.

The probe never reads labels from the samples a dataset yields: caption, AU and emotion
datasets carry them differently (or not at all). It reads the records behind the dataset, so
any dataset whose items line up with a list of records can be probed for AUs or emotions.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lavis_ext import facs
from lavis_ext.errors import InputError

TARGETS = ("au", "emotion")


def parse_aus(value: Any, where: str = "run.probe.aus") -> list[int] | None:
    """AU numbers from a ``facs.AU_SUBSETS`` name (e.g. ``rafau13``) or a list; None = default."""
    aus = facs.parse_au_subset(value, where)
    return None if aus is None else list(aus)


def default_names(target: str, records: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Classes when the config names none: AUs with a positive label, or emotions seen."""
    records = list(records)
    if target == "au":
        return sorted({int(a) for r in records for a, v in (r.get("aus") or {}).items()
                       if v == 1})
    seen = {facs.canonical_emotion(e) for r in records for e in r.get("emotions") or []}
    ordered = [e for e in facs.EMOTION_NAMES if e in seen]
    return ordered + sorted(seen - set(ordered))


@dataclass
class Encoded:
    """Labels of the usable items: their positions, targets [N, C] or [N], and masks."""

    positions: list[int]
    targets: np.ndarray
    masks: np.ndarray
    skipped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class LabelSpace:
    """The probed classes (AU numbers or emotion names) and how a record maps onto them."""

    target: str
    names: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise InputError(f"run.probe.target must be one of {TARGETS}, got {self.target!r}")
        if not self.names:
            raise InputError(f"the probe has no {self.target} class to predict")

    def label(self, record: Mapping[str, Any]) -> tuple[Any, np.ndarray] | str:
        """(target, mask) of one record, or the reason it cannot be used."""
        if self.target == "au":
            aus = record.get("aus") or {}
            values = [aus.get(str(a)) for a in self.names]
            mask = np.array([v is not None for v in values])
            if not mask.any():
                return "none of the probed AUs coded"
            return np.array([1.0 if v == 1 else 0.0 for v in values], dtype=np.float32), mask
        emotions = {facs.canonical_emotion(e) for e in record.get("emotions") or []}
        if len(emotions) != 1:
            return "no emotion label" if not emotions else "more than one emotion"
        emotion = next(iter(emotions))
        if emotion not in self.names:
            return "emotion outside the probed classes"
        return self.names.index(emotion), np.ones(1, dtype=bool)

    def encode(self, records: Sequence[Mapping[str, Any] | None]) -> Encoded:
        """Labels for a list of records (None = no record), keeping the usable ones."""
        positions, targets, masks, skipped = [], [], [], Counter()
        for i, record in enumerate(records):
            result = "image id not in the records" if record is None else self.label(record)
            if isinstance(result, str):
                skipped[result] += 1
                continue
            positions.append(i)
            targets.append(result[0])
            masks.append(result[1])
        width = len(self.names)
        if self.target == "au":
            y = np.stack(targets) if targets else np.zeros((0, width), dtype=np.float32)
            m = np.stack(masks) if masks else np.zeros((0, width), dtype=bool)
        else:
            y = np.array(targets, dtype=np.int64)
            m = np.ones((len(targets), 1), dtype=bool)
        return Encoded(positions, y, m, skipped)
