"""The annotation record: the single contract between readers, synthesis, training and evaluation.

A records file is a JSON list of objects. Required fields:

- ``image``      path of the image relative to the images root (str)
- ``image_id``   unique, stable id (str; never cast to int)
- ``dataset``    dataset key, e.g. ``"bp4d"`` (str)
- ``subject``    subject id, or null when the dataset does not say (str | None)
- ``split``      ``"train"``, ``"val"`` or ``"test"`` (str)
- ``aus``        AU number as a string -> 1 (present), 0 (absent) or null (not coded)
- ``emotions``   lowercase emotion names (list[str]); empty when unlabelled
- ``caption``    reference / training captions (list[str])

Optional fields:

- ``au_intensity``  AU number as a string -> 0-5 (or null where not coded)
- ``captions``      provenance of ``caption``: synthesis kind -> list of texts
                    (``"au-rule"``, ``"au-llm"``, ``"emotion-rule"``, ``"fuse"``, ...;
                    ``"cot-rule"``, ``"cot-llm"``, ``"cot"`` hold ExpLLM-style three-part
                    chains of thought, with line breaks)
- ``sequence``      video sequence key (e.g. ``"F001_T1"``), for frame sampling
- ``frame``         frame number inside ``sequence`` (int)
- ``failures``      synthesis kind -> reason, for captions an LLM could not produce
- ``meta``          anything dataset specific (valence, URL, ...)
- ``face_box``      the face as [x, y, w, h] in source pixels (AffectNet's own box, or
                    ``prepare --faces align``'s detection)
- ``face_landmarks`` the 5 alignment points [[x, y], ...] (eye centres, nose tip, mouth
                    corners, image left to right), or null when only a box is known
- ``face_image``    the aligned face crop ``prepare --faces align`` wrote; training reads it
                    instead of ``image`` (absolute, or relative to the images root)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from lavis_ext.errors import InputError
from lavis_ext.io import atomic_write_text  # noqa: F401  (the one atomic writer; re-exported)

Record = dict[str, Any]

REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "image": (str,),
    "image_id": (str,),
    "dataset": (str,),
    "subject": (str, type(None)),
    "split": (str,),
    "aus": (dict,),
    "emotions": (list,),
    "caption": (list,),
}
SPLITS = ("train", "val", "test")
N_FACE_POINTS = 5


class RecordError(InputError):
    """A record or a records file does not follow the schema."""


def new_record(image: str, image_id: str, dataset: str, split: str, *,
               subject: str | None = None, aus: dict[str, int | None] | None = None,
               emotions: Iterable[str] = (), **extra: Any) -> Record:
    """Build a record with every required field present."""
    record: Record = {
        "image": image, "image_id": str(image_id), "dataset": dataset, "subject": subject,
        "split": split, "aus": dict(aus or {}), "emotions": list(emotions), "caption": [],
    }
    record.update(extra)
    return record


def validate_record(record: Any, where: str = "record") -> Record:
    """Check one record against the schema; the error names the field and what was expected."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name, types in REQUIRED_FIELDS.items():
        if name not in record:
            raise RecordError(f"{where}: missing field '{name}'")
        if not isinstance(record[name], types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecordError(f"{where}: field '{name}' must be {expected}, "
                              f"got {type(record[name]).__name__}")
    if record["split"] not in SPLITS:
        raise RecordError(f"{where}: field 'split' must be one of {SPLITS}, "
                          f"got {record['split']!r}")
    for au, value in record["aus"].items():
        if not str(au).isdigit():
            raise RecordError(f"{where}: 'aus' key {au!r} is not an AU number")
        if value not in (0, 1, None) or isinstance(value, bool):
            raise RecordError(f"{where}: 'aus'[{au!r}] must be 1, 0 or null, got {value!r}")
    for i, text in enumerate(record["caption"]):
        if not isinstance(text, str):
            raise RecordError(f"{where}: 'caption'[{i}] must be a string")
    for i, text in enumerate(record["emotions"]):
        if not isinstance(text, str) or text != text.lower():
            raise RecordError(f"{where}: 'emotions'[{i}] must be a lowercase string, "
                              f"got {text!r}")
    _validate_face(record, where)
    return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_face(record: Record, where: str) -> None:
    """The optional face fields: a box with positive size, 5 points, a crop path."""
    box = record.get("face_box")
    if box is not None and not (isinstance(box, list) and len(box) == 4
                                and all(_is_number(v) for v in box) and box[2] > 0 < box[3]):
        raise RecordError(f"{where}: field 'face_box' must be [x, y, w, h] with w, h > 0, "
                          f"got {box!r}")
    points = record.get("face_landmarks")
    if points is not None and not (
            isinstance(points, list) and len(points) == N_FACE_POINTS
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)
                    for p in points)):
        raise RecordError(f"{where}: field 'face_landmarks' must be {N_FACE_POINTS} [x, y] "
                          f"points or null, got {points!r}")
    if "face_image" in record and not (isinstance(record["face_image"], str)
                                       and record["face_image"]):
        raise RecordError(f"{where}: field 'face_image' must be a non-empty path string, "
                          f"got {record['face_image']!r}")


def image_file(record: Record, images_root: str | os.PathLike) -> Path:
    """The file a model sees for ``record``: its aligned crop when ``prepare --faces`` wrote
    one (``face_image``), else the source ``image``; relative paths join the images root."""
    return Path(images_root) / record.get("face_image", record["image"])


def read_record_list(path: str | os.PathLike) -> list[Any]:
    """The JSON list in a records file, unvalidated; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of records, got "
                          f"{type(data).__name__}")
    return data


def load_records(path: str | os.PathLike) -> list[Record]:
    """Read and validate a records file; errors name the file and the record index."""
    data = read_record_list(path)
    for i, record in enumerate(data):
        validate_record(record, f"{path}[{i}]")
    return data


def save_records(records: list[Record], path: str | os.PathLike, *, validate: bool = True) -> None:
    """Validate and write records atomically, one record per line: still a JSON list, easy
    to read and diff, and several times faster than an indented dump (the C encoder runs)."""
    if validate:
        for i, record in enumerate(records):
            validate_record(record, f"{path}[{i}]")
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    atomic_write_text(path, f"[\n{body}\n]\n" if records else "[]\n")


def add_captions(record: Record, kind: str, texts: Iterable[str]) -> None:
    """Append captions of one synthesis kind to ``caption`` and record their provenance."""
    texts = [t for t in texts if t]
    by_kind = record.setdefault("captions", {})
    kept = by_kind.setdefault(kind, [])
    for text in texts:
        if text not in kept:
            kept.append(text)
        if text not in record["caption"]:
            record["caption"].append(text)


def present_aus(record: Record) -> list[int]:
    """AU numbers coded as present, sorted."""
    return sorted(int(au) for au, value in record["aus"].items() if value == 1)
