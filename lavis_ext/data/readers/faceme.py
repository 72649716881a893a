"""FaceME: a documented CSV (no public parser or layout exists).

``<root>/faceme_labels.csv``, one row per (image, annotator):

- ``image``: image path relative to ``<root>`` (e.g. ``images/000001.jpg``);
- ``annotator``: annotator id (any text);
- then one 0/1 column per label. The header gives the label names, optionally prefixed by
  their group and a slash (``emotions/happy``, ``internal feelings/bored``,
  ``actions/talking``, ``health status/tired``). The label list is read from the header, never
  hard-coded, so the full 85-label release works as is.

A label is kept for an image when at least ``min_votes`` annotators (default 2) marked it.
Every kept label goes to ``emotions`` through ``facs.canonical_emotion`` (the paper's emotion
caption merges all labels of an image); ``meta.labels`` keeps them by group, as written.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, csv_data_rows,
                                           require_dir,
                                           require_file)
from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError
from lavis_ext.facs import canonical_emotion

NAME = "faceme"
DEFAULT_LABELS_FILE = "faceme_labels.csv"
DEFAULT_MIN_VOTES = 2


def split_label(header: str) -> tuple[str | None, str]:
    group, sep, label = header.rpartition("/")
    return (group.strip() or None, label.strip()) if sep else (None, header.strip())


def read(root: str | Path, report: SkipReport, *, labels_file: str = DEFAULT_LABELS_FILE,
         min_votes: int = DEFAULT_MIN_VOTES, **_: object) -> list[Record]:
    if min_votes < 1:
        raise UsageError(f"FaceME min_votes must be >= 1, got {min_votes}")
    root = require_dir(root, "FaceME root")
    path = require_file(root / labels_file, "FaceME label CSV")
    report.add_file(path)
    votes: dict[str, Counter[int]] = {}
    annotators: dict[str, set[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = [h.strip() for h in next(rows, [])]
        if len(header) < 3 or header[0].lower() != "image" or header[1].lower() != "annotator":
            raise DatasetFormatError(
                f"{path}:1: header must be 'image,annotator,<label>,...'; got {header[:4]}")
        labels = [split_label(h) for h in header[2:]]
        if any(not label for _, label in labels):
            raise DatasetFormatError(f"{path}:1: a label column has an empty name")
        for line, row in csv_data_rows(rows, header, path, report):
            image, annotator = row[0].strip().replace("\\", "/"), row[1].strip()
            if not image:
                report.skip("empty image path", path, line)
                continue
            cells = [c.strip() for c in row[2:]]
            bad = next((c for c in cells if c not in ("0", "1", "")), None)
            if bad is not None:
                report.skip("value out of range", path, line, f"{bad!r} (expected 0 or 1)")
                continue
            seen = annotators.setdefault(image, set())
            if annotator in seen:
                report.skip("duplicate annotator for image", path, line,
                            f"{image} / {annotator}")
                continue
            seen.add(annotator)
            count = votes.setdefault(image, Counter())
            for index, cell in enumerate(cells):
                if cell == "1":
                    count[index] += 1
    records: list[Record] = []
    for image, count in votes.items():
        if len(annotators[image]) < min_votes:
            report.note(f"images with fewer than {min_votes} annotators")
        kept = [labels[i] for i in sorted(count) if count[i] >= min_votes]
        by_group: dict[str, list[str]] = {}
        emotions: list[str] = []
        for group, label in kept:
            by_group.setdefault(group or "labels", []).append(label)
            name = canonical_emotion(label)
            if name not in emotions:
                emotions.append(name)
        stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        records.append({
            "image": image, "image_id": image.rsplit(".", 1)[0].replace("/", "_") or stem,
            "dataset": NAME, "subject": None, "split": "train", "aus": {},
            "emotions": emotions, "caption": [],
            "meta": {"labels": by_group, "annotators": len(annotators[image])},
        })
    return records
