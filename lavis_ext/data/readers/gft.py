"""GFT: a documented per-frame CSV (the official label layout is not public).

``<root>/gft_labels.csv`` (or any CSV given with ``labels_file``), one row per frame:

- ``image``: frame image path relative to ``<root>``, e.g. ``frames/028C/1.jpg``;
- ``subject`` (optional): participant id such as ``028C``; when absent, the folder that holds
  the image (``028C``) is the subject;
- ``frame`` (optional): frame number; when absent, the image file's stem;
- ``au1``, ``AU2``, ``au04`` ...: 0, 1, or 9 / empty for not coded.
"""
from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath
from typing import Iterable

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, csv_data_rows,
                                           au_number_from_header,
                                           require_dir, require_file, select_aus)
from lavis_ext.data.records import Record
from lavis_ext.facs import AU_SUBSETS

NAME = "gft"
DEFAULT_LABELS_FILE = "gft_labels.csv"


def read(root: str | Path, report: SkipReport, *, aus: Iterable[int] | str | None = None,
         labels_file: str = DEFAULT_LABELS_FILE, **_: object) -> list[Record]:
    root = require_dir(root, "GFT root")
    path = require_file(root / labels_file, "GFT per-frame label CSV")
    report.add_file(path)
    records: list[Record] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = [h.strip() for h in next(rows, [])]
        lower = [h.lower() for h in header]
        if "image" not in lower:
            raise DatasetFormatError(f"{path}:1: no 'image' column; header is {header}")
        image_col = lower.index("image")
        subject_col = lower.index("subject") if "subject" in lower else None
        frame_col = lower.index("frame") if "frame" in lower else None
        columns = {}
        for index, name in enumerate(header):
            if name.lower().startswith("au"):
                number = au_number_from_header(name)
                if number is None:
                    raise DatasetFormatError(f"{path}:1: column {name!r} is not an AU column")
                columns[number] = index
        keep = select_aus(columns, aus, AU_SUBSETS["gft"])
        missing = [au for au in keep if au not in columns]
        if missing:
            raise DatasetFormatError(f"{path}:1: no column for AU(s) {missing}")
        for line, row in csv_data_rows(rows, header, path, report):
            image = row[image_col].strip().replace("\\", "/")
            if not image:
                report.skip("empty image path", path, line)
                continue
            parts = PurePosixPath(image)
            subject = row[subject_col].strip() if subject_col is not None else parts.parent.name
            if not subject:
                report.skip("no subject", path, line, image)
                continue
            try:
                frame = int(row[frame_col]) if frame_col is not None else int(parts.stem)
            except ValueError:
                report.skip("frame number is not an integer", path, line, image)
                continue
            labels: dict[str, int | None] = {}
            bad = None
            for au in keep:
                cell = row[columns[au]].strip()
                if cell in ("", "9"):
                    labels[str(au)] = None
                elif cell in ("0", "1"):
                    labels[str(au)] = int(cell)
                else:
                    bad = f"au{au}={cell!r} (expected 0, 1, 9 or empty)"
                    break
            if bad:
                report.skip("value out of range", path, line, bad)
                continue
            if all(v is None for v in labels.values()):
                report.skip("no AU coded", path, line, image)
                continue
            image_id = f"{subject}_{frame}"
            if image_id in seen:
                report.skip("duplicate frame", path, line, image_id)
                continue
            seen.add(image_id)
            records.append({
                "image": image, "image_id": image_id, "dataset": NAME, "subject": subject,
                "split": "train", "aus": labels, "emotions": [], "caption": [],
                "sequence": subject, "frame": frame,
            })
    return records
