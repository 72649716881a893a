"""AffectNet: the CSV release and the 8-class ``.npy`` release; the official split.

CSV release: ``Manually_Annotated_file_lists/training.csv`` (train) and ``validation.csv``
(test), header ``subDirectory_filePath,face_x,face_y,face_width,face_height,
facial_landmarks,expression,valence,arousal``; images under ``Manually_Annotated_Images/``.

8-class release: ``train_set/`` (train) and ``val_set/`` (test), each with ``images/<id>.jpg``
and ``annotations/<id>_exp.npy`` (+ ``_val``, ``_aro``): 0-d arrays whose scalar is sometimes a
string. Codes 8 (None), 9 (Uncertain) and 10 (No-Face) are not emotions: skipped and counted.

The face as AffectNet annotates it becomes ``face_box`` (CSV: ``face_x, face_y, face_width,
face_height``; ``.npy``: the bounding box of ``_lnd.npy``'s points) and ``face_landmarks``,
the 5 alignment points derived from the 68 (iBUG 300-W order): ``prepare --faces align``
aligns with these instead of running a detector. A row whose box or landmarks cannot be used
keeps its record without them (noted in the report), and the detector finds that face.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, csv_data_rows,
                                           parse_int,
                                           progress, require_dir, require_file)
from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError
from lavis_ext.facs import AFFECTNET, AFFECTNET_NON_EMOTION

NAME = "affectnet"
CSV_DIR = "Manually_Annotated_file_lists"
CSV_IMAGES = "Manually_Annotated_Images"
CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}
NPY_SPLITS = {"train_set": "train", "val_set": "test"}
CSV_REQUIRED = ("subDirectory_filePath", "expression")
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")


# iBUG 300-W 68-point indices: eyes 36-41 and 42-47 (image left first), nose tip 30, mouth
# corners 48 and 54; the same order as MTCNN's 5 points.
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = range(36, 42), range(42, 48), 30, 48, 54


def five_points_from_68(values: list[float]) -> list[list[float]]:
    """The aligner's 5 points (eye centres, nose tip, mouth corners) from 136 floats
    ``x0, y0, x1, y1, ...``; ``ValueError`` when there are not 136 finite numbers."""
    if len(values) != 136 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected 136 finite landmark numbers (68 points), got {len(values)}")
    points = [(values[2 * i], values[2 * i + 1]) for i in range(68)]

    def mean(indices: range) -> list[float]:
        return [round(sum(points[i][k] for i in indices) / len(indices), 2) for k in (0, 1)]

    return [mean(LEFT_EYE), mean(RIGHT_EYE), [round(v, 2) for v in points[NOSE_TIP]],
            [round(v, 2) for v in points[MOUTH_LEFT]], [round(v, 2) for v in points[MOUTH_RIGHT]]]


def _box(values: list[float | None]) -> list[float] | None:
    if any(v is None or not math.isfinite(v) for v in values) or values[2] <= 0 or \
            values[3] <= 0:
        return None
    return [round(float(v), 2) for v in values]


def _points_box(values: list[float]) -> list[float] | None:
    xs, ys = values[0::2], values[1::2]
    return _box([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])


def detect_release(root: Path) -> str:
    if (root / CSV_DIR).is_dir():
        return "csv"
    if any((root / d).is_dir() for d in NPY_SPLITS):
        return "npy"
    raise DatasetFormatError(
        f"AffectNet: {root} has neither {CSV_DIR}/ (CSV release) nor train_set/ and val_set/ "
        "(8-class .npy release)")


def read(root: str | Path, report: SkipReport, *, release: str | None = None,
         **_: object) -> list[Record]:
    root = require_dir(root, "AffectNet root")
    release = release or detect_release(root)
    if release == "csv":
        return _read_csv_release(root, report)
    if release == "npy":
        return _read_npy_release(root, report)
    raise UsageError(f"AffectNet release must be 'csv' or 'npy', got {release!r}")


def _emotion(code: int, report: SkipReport, path: Path, line: int | None) -> str | None:
    if code in AFFECTNET:
        return AFFECTNET[code]
    if code in AFFECTNET_NON_EMOTION:
        report.skip(f"not an emotion ({code} {AFFECTNET_NON_EMOTION[code]})", path, line)
    else:
        report.skip("value out of range", path, line, f"expression {code} (expected 0-10)")
    return None


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _read_csv_release(root: Path, report: SkipReport) -> list[Record]:
    records: list[Record] = []
    seen: set[str] = set()
    for file_name, split in CSV_SPLITS.items():
        path = require_file(root / CSV_DIR / file_name, f"AffectNet {split} list")
        report.add_file(path)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle)
            header = [h.strip() for h in next(rows, [])]
            missing = [c for c in CSV_REQUIRED if c not in header]
            if missing:
                raise DatasetFormatError(f"{path}:1: header lacks column(s) {missing}; got "
                                         f"{header}")
            col = {name: i for i, name in enumerate(header)}
            for line, row in csv_data_rows(rows, header, path, report):
                try:
                    code = parse_int(row[col["expression"]])
                except ValueError:
                    report.skip("not an integer", path, line,
                                f"expression {row[col['expression']]!r}")
                    continue
                emotion = _emotion(code, report, path, line)
                if emotion is None:
                    continue
                rel = row[col["subDirectory_filePath"]].strip().replace("\\", "/")
                image_id = rel.rsplit(".", 1)[0].replace("/", "_")
                if image_id in seen:
                    report.skip("duplicate image", path, line, rel)
                    continue
                seen.add(image_id)
                meta = {key: _float_or_none(row[col[key]]) for key in ("valence", "arousal")
                        if key in col}
                record = {
                    "image": f"{CSV_IMAGES}/{rel}", "image_id": image_id, "dataset": NAME,
                    "subject": None, "split": split, "aus": {}, "emotions": [emotion],
                    "caption": [], "meta": meta,
                }
                if all(key in col for key in BOX_COLUMNS):
                    box = _box([_float_or_none(row[col[key]]) for key in BOX_COLUMNS])
                    if box is None:
                        report.note("rows without a usable face box (the detector finds "
                                    "the face)")
                    else:
                        record["face_box"] = box
                if "face_box" in record and "facial_landmarks" in col:
                    record["face_landmarks"] = _landmarks(row[col["facial_landmarks"]], report)
                records.append(record)
    return records


def _landmarks(text: str, report: SkipReport) -> list[list[float]] | None:
    """5 points from the CSV's ``;``-separated 136 floats, or None (the box aligns)."""
    try:
        return five_points_from_68([float(v) for v in text.split(";") if v.strip()])
    except ValueError:
        report.note("rows without 68 usable landmarks (aligned from the face box)")
        return None


def _load_scalar(path: Path):
    import numpy as np

    value = np.load(path, allow_pickle=False)
    return value.item() if value.shape == () else value.reshape(-1)[0].item()


def _read_npy_release(root: Path, report: SkipReport) -> list[Record]:
    import numpy as np

    records: list[Record] = []
    for folder, split in NPY_SPLITS.items():
        annotations = require_dir(root / folder / "annotations", f"AffectNet {split} annotations")
        report.add_file(annotations)
        paths = sorted(annotations.glob("*_exp.npy"))
        for path in progress(paths, f"AffectNet {folder}"):
            report.read()
            image_id = path.name[: -len("_exp.npy")]
            try:
                code = parse_int(_load_scalar(path))
            except (ValueError, OSError) as err:
                report.skip("unreadable .npy", path, None, str(err))
                continue
            emotion = _emotion(code, report, path, None)
            if emotion is None:
                continue
            meta = {}
            for key, suffix in (("valence", "_val.npy"), ("arousal", "_aro.npy")):
                extra = annotations / f"{image_id}{suffix}"
                if extra.is_file():
                    try:
                        meta[key] = float(_load_scalar(extra))
                    except (ValueError, OSError):
                        report.note(f"unreadable {suffix} files (ignored)")
            record = {
                "image": f"{folder}/images/{image_id}.jpg", "image_id": f"{split}_{image_id}",
                "dataset": NAME, "subject": None, "split": split, "aus": {},
                "emotions": [emotion], "caption": [], "meta": meta,
            }
            landmarks = annotations / f"{image_id}_lnd.npy"
            if landmarks.is_file():
                try:
                    values = [float(v) for v in np.load(landmarks, allow_pickle=False)
                              .reshape(-1)]
                    record["face_landmarks"] = five_points_from_68(values)
                    box = _points_box(values)
                    if box is None:
                        raise ValueError("the landmarks span no area")
                    record["face_box"] = box
                except (ValueError, OSError):
                    record.pop("face_landmarks", None)
                    report.note("unreadable or malformed _lnd.npy files (the detector finds "
                                "the face)")
            records.append(record)
    return records
