"""Video frame sampling (paper, supplementary section 2).

Consecutive video frames are nearly identical, so the paper keeps one frame in ten per
sequence and adds back every frame whose AU labels differ from the previous frame: rare,
short actions survive while long static stretches are thinned.

A label that is missing (not coded: BP4D's 9, stored as ``null``) is not a label: a frame
whose AU turns from 0 to not-coded, or back, is not a change. Each AU is compared with its
last coded value in the sequence, so 0, 9, 1 still counts the 1 as a change from 0.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError

DEFAULT_EVERY = 10


def _changed(labels: Mapping[str, Any], last_coded: dict[str, Any]) -> bool:
    """Whether a coded AU differs from its last coded value; updates ``last_coded``."""
    changed = False
    for au, value in labels.items():
        if value is None:
            continue
        if au in last_coded and last_coded[au] != value:
            changed = True
        last_coded[au] = value
    return changed


def sample_frames(records: list[Record], every: int = DEFAULT_EVERY) -> list[Record]:
    """Keep frame positions 0, N, 2N ... of each sequence, plus label changes; order kept.

    Sequences are ``record["sequence"]`` (else the subject), ordered by ``record["frame"]``.
    "Previous frame" is the previous labelled frame of the sequence, so gaps are not changes;
    a change to or from not-coded (``null``) is not a change either.
    """
    if every < 1:
        raise UsageError(f"sample every N frames needs N >= 1, got {every}")
    if every == 1:
        return list(records)
    by_sequence: dict[object, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_sequence[record.get("sequence", record.get("subject"))].append(index)
    keep: set[int] = set()
    for indices in by_sequence.values():
        indices.sort(key=lambda i: records[i].get("frame", 0))
        last_coded: dict[str, Any] = {}
        for position, index in enumerate(indices):
            changed = _changed(records[index]["aus"], last_coded)
            if position % every == 0 or changed:
                keep.add(index)
    return [r for i, r in enumerate(records) if i in keep]
