"""BP4D-Spontaneous: ``AUCoding/AU_OCC/<Subj>_<Task>.csv`` occurrence files.

Warts handled: the original header is the integers ``0..99`` (column N holds AU N), some
re-releases name their columns (``Frame``/``0``, ``1``, ``AU2`` ...); 9 means not coded; the
frame number is unpadded in the CSV while image files are zero-padded, with the width (3 or 4
digits) detected from each sequence folder.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, au_number_from_header,
                                           progress, require_dir, select_aus)
from lavis_ext.data.records import Record
from lavis_ext.facs import AU_SUBSETS

NAME = "bp4d"
LABEL_DIR = "AUCoding/AU_OCC"
DEFAULT_FRAME_PATTERN = "Sequences_2D+3D/{subject}/{task}/{frame}.jpg"
DEFAULT_PADDING = 4
NOT_CODED = 9
_FILE_NAME = re.compile(r"^([FM]\d{3})_(T\d+)\.csv$")


def detect_padding(folder: Path) -> int | None:
    """Width of the zero-padded frame numbers of the image files in ``folder``, if any."""
    if not folder.is_dir():
        return None
    for name in os.listdir(folder):
        stem = name.rsplit(".", 1)[0]
        if stem.isdigit():
            return len(stem)
    return None


def sequence_padding(pattern: str, root: Path, subject: str, task: str,
                     cache: dict[str, int]) -> int:
    """Frame-number width of one sequence's image folder (cached per sequence)."""
    key = f"{subject}/{task}"
    if key not in cache:
        sample = pattern.format(subject=subject, task=task, frame="0")
        cache[key] = detect_padding((root / sample).parent) or DEFAULT_PADDING
    return cache[key]


def read(root: str | Path, report: SkipReport, *, aus: Iterable[int] | str | None = None,
         frame_pattern: str = DEFAULT_FRAME_PATTERN, **_: object) -> list[Record]:
    """Read every ``<Subj>_<Task>.csv``; one record per coded frame (split set later)."""
    root = Path(root)
    label_dir = require_dir(root / LABEL_DIR, "BP4D occurrence labels")
    files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() == ".csv")
    if not files:
        raise DatasetFormatError(f"BP4D: no <Subject>_<Task>.csv files in {label_dir}")
    records: list[Record] = []
    padding_cache: dict[str, int] = {}
    for path in progress(files, "BP4D label files"):
        match = _FILE_NAME.match(path.name)
        if not match:
            report.note("files ignored (name is not <Subject>_<Task>.csv)")
            continue
        subject, task = match.groups()
        report.add_file(path)
        _read_file(path, root, subject, task, aus, frame_pattern, padding_cache, report, records)
    return records


def _read_file(path: Path, root: Path, subject: str, task: str, wanted, frame_pattern: str,
               padding_cache: dict[str, int], report: SkipReport, out: list[Record]) -> None:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None:
            raise DatasetFormatError(f"{path}: empty file (expected a header row)")
        columns: dict[int, int] = {}
        for index, name in enumerate(header[1:], start=1):
            number = au_number_from_header(name)
            if number is None:
                raise DatasetFormatError(
                    f"{path}:1: header column {index + 1} is {name!r}; expected an AU number "
                    "such as 1 or AU1 (column 1 is the frame number)")
            columns[number] = index
        keep = select_aus(columns, wanted, AU_SUBSETS["bp4d"])
        missing = [au for au in keep if au not in columns]
        if missing:
            raise DatasetFormatError(f"{path}:1: header has no column for AU(s) {missing}")
        keep_cols = [(str(au), columns[au]) for au in keep]
        width = len(header)
        padding = sequence_padding(frame_pattern, root, subject, task, padding_cache)
        sequence = f"{subject}_{task}"
        for line, row in enumerate(rows, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            report.read()
            if len(row) != width:
                report.skip("wrong number of columns", path, line,
                            f"{len(row)} columns, header has {width}")
                continue
            try:
                frame = int(row[0])
                values = [(au, int(row[col])) for au, col in keep_cols]
            except ValueError:
                report.skip("not an integer", path, line, ",".join(row[:6]) + "...")
                continue
            labels: dict[str, int | None] = {}
            bad = None
            for au, value in values:
                if value == NOT_CODED:
                    labels[au] = None
                elif value in (0, 1):
                    labels[au] = value
                else:
                    bad = f"AU{au}={value} (expected 0, 1 or 9)"
                    break
            if bad:
                report.skip("value out of range", path, line, bad)
                continue
            if all(v is None for v in labels.values()):
                report.skip("no AU coded (all 9)", path, line)
                continue
            image = frame_pattern.format(subject=subject, task=task,
                                         frame=str(frame).zfill(padding))
            out.append({
                "image": image, "image_id": f"{sequence}_{frame}", "dataset": NAME,
                "subject": subject, "split": "train", "aus": labels, "emotions": [],
                "caption": [], "sequence": sequence, "frame": frame,
            })
