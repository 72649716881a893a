"""Follow faces across video frames by box overlap, so a table's ``face_id`` names one person.

Greedy IoU matching, as in simple multi-object trackers: every (track, box) pair whose IoU
reaches the threshold is a candidate, the best pairs are taken first, and each track and box
is used once. A box left over starts a new track; a track unmatched for more than
``max_missed`` processed frames ends. Identities are not re-found after a long absence (no
appearance model): OpenFace's ``face_id`` has the same limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lavis_ext.describe.faces import iou

Box = Sequence[float]  # x, y, w, h


@dataclass
class Track:
    face_id: int
    box: tuple[float, ...]
    missed: int = 0


class IoUTracker:
    """``update(boxes)`` once per processed frame returns one ``face_id`` per box."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 2, next_id: int = 0):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold {iou_threshold}: expected a value in (0, 1]")
        self.iou_threshold, self.max_missed = iou_threshold, max_missed
        self.next_id = next_id
        self.tracks: list[Track] = []

    def resume(self, tracks: Sequence[tuple[int, Box]], next_id: int) -> None:
        """Continue from the last frame a previous run wrote: its (face_id, box) pairs."""
        self.tracks = [Track(int(i), tuple(b)) for i, b in tracks]
        self.next_id = max([next_id] + [t.face_id + 1 for t in self.tracks])

    def update(self, boxes: Sequence[Box]) -> list[int]:
        pairs = sorted(((iou(track.box, box), t, b) for t, track in enumerate(self.tracks)
                        for b, box in enumerate(boxes)), reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, t, b in pairs:
            if overlap < self.iou_threshold:
                break
            if t in used or ids[b] is not None:
                continue
            used.add(t)
            ids[b] = self.tracks[t].face_id
            self.tracks[t].box, self.tracks[t].missed = tuple(boxes[b]), 0
        kept = []
        for t, track in enumerate(self.tracks):
            if t not in used:
                track.missed += 1
            if track.missed <= self.max_missed:
                kept.append(track)
        self.tracks = kept
        for b, box in enumerate(boxes):
            if ids[b] is None:
                ids[b] = self.next_id
                self.tracks.append(Track(self.next_id, tuple(box)))
                self.next_id += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]
