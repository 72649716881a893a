"""Video frame sampling (paper, supplementary section 2).

Consecutive video frames are nearly identical, so the paper keeps one frame in ten per
sequence and adds back every frame whose AU labels differ from the previous frame: rare,
short actions survive while long static stretches are thinned.
"""
from __future__ import annotations

from collections import defaultdict

from lavis_ext.data.records import Record

DEFAULT_EVERY = 10


def sample_frames(records: list[Record], every: int = DEFAULT_EVERY) -> list[Record]:
    """Keep frame positions 0, N, 2N ... of each sequence, plus label changes; order kept.

    Sequences are ``record["sequence"]`` (else the subject), ordered by ``record["frame"]``.
    "Previous frame" is the previous labelled frame of the sequence, so gaps are not changes.
    """
    if every < 1:
        raise ValueError(f"sample every N frames needs N >= 1, got {every}")
    if every == 1:
        return list(records)
    by_sequence: dict[object, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_sequence[record.get("sequence", record.get("subject"))].append(index)
    keep: set[int] = set()
    for indices in by_sequence.values():
        indices.sort(key=lambda i: records[i].get("frame", 0))
        previous = None
        for position, index in enumerate(indices):
            labels = records[index]["aus"]
            if position % every == 0 or (previous is not None and labels != previous):
                keep.add(index)
            previous = labels
    return [r for i, r in enumerate(records) if i in keep]
