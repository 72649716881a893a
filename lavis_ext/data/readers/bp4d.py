"""BP4D-Spontaneous: ``AUCoding/AU_OCC/<Subj>_<Task>.csv`` occurrence files.

Warts handled: the original header is the integers ``0..99`` (column N holds AU N), some
re-releases name their columns (``Frame``/``0``, ``1``, ``AU2`` ...); 9 means not coded; the
frame number is unpadded in the CSV while image files are zero-padded, with the width (3 or 4
digits) detected from each sequence folder.

Intensity (optional): ``AU-Intensity-Codes3.0/AU06/F001_T1_AU06.csv`` for AUs 6, 10, 12, 14
and 17, no header, ``frame,intensity`` per line with 0-5 (or the FACS letters A-E) and 9 for
not coded. Where those files are present, records gain ``au_intensity`` for the AUs they
cover (null for a frame a file lacks or codes 9).
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, au_number_from_header,
                                           progress, require_dir, select_aus, text_lines)
from lavis_ext.data.records import Record
from lavis_ext.errors import InputError
from lavis_ext.facs import AU_SUBSETS, intensity_from_letter

NAME = "bp4d"
LABEL_DIR = "AUCoding/AU_OCC"
DEFAULT_FRAME_PATTERN = "Sequences_2D+3D/{subject}/{task}/{frame}.jpg"
DEFAULT_PADDING = 4
NOT_CODED = 9
_FILE_NAME = re.compile(r"^([FM]\d{3})_(T\d+)\.csv$")
INTENSITY_DIR = "AU-Intensity-Codes3.0"
_INTENSITY_NAME = re.compile(r"^([FM]\d{3})_(T\d+)_AU(\d+)\.csv$", re.IGNORECASE)
# sequence -> AU (str) -> frame -> 0-5, or None where coded 9
Intensities = dict[str, dict[str, dict[int, int | None]]]


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
    intensities = read_intensities(root, report)
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
    for record in records:
        table = intensities.get(record["sequence"])
        kept = [au for au in sorted(table or {}, key=int) if au in record["aus"]]
        if kept:
            record["au_intensity"] = {au: table[au].get(record["frame"]) for au in kept}
    return records


def read_intensities(root: Path, report: SkipReport) -> Intensities:
    """The intensity files under ``AU-Intensity-Codes3.0`` (absent folder: none, noted)."""
    folder = root / INTENSITY_DIR
    out: Intensities = {}
    if not folder.is_dir():
        report.note(f"no {INTENSITY_DIR} folder: records carry no au_intensity")
        return out
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        match = _INTENSITY_NAME.match(path.name)
        if not match:
            report.note(f"files ignored under {INTENSITY_DIR} (name is not "
                        "<Subject>_<Task>_AU<N>.csv)")
            continue
        subject, task, number = match.group(1).upper(), match.group(2).upper(), match.group(3)
        report.add_file(path)
        series = out.setdefault(f"{subject}_{task}", {}).setdefault(str(int(number)), {})
        for line_no, text in text_lines(path, report):
            parts = [p.strip() for p in text.split(",")]
            if len(parts) != 2:
                report.skip("intensity: wrong number of fields", path, line_no,
                            f"{text!r} (expected frame,intensity)")
                continue
            try:
                frame = int(parts[0])
            except ValueError:
                report.skip("intensity: frame is not an integer", path, line_no, repr(text))
                continue
            if frame in series:
                report.skip("intensity: duplicate frame", path, line_no, f"frame {frame}")
                continue
            if parts[1] == str(NOT_CODED):
                series[frame] = None
                continue
            try:
                series[frame] = intensity_from_letter(parts[1])
            except InputError:
                report.skip("intensity: value out of range", path, line_no,
                            f"{parts[1]!r} (expected 0-5, A-E or 9)")
    return out


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
