"""The table ``expblip describe`` writes: one row per face (or per failure), pandas-friendly.

Columns follow OpenFace 2.0 where they mean the same thing (``frame``, ``face_id``,
``confidence``, the box, landmarks as ``lm<i>_x``/``lm<i>_y``, one ``AUxx`` column per action
unit); docs/describe.md has the side-by-side list. The table is appended to as rows are made
and flushed (and fsynced) per batch, so a crash loses at most one batch, and a rerun reads it
back to skip what is already there.

Formats, by the ``--out`` suffix:
- ``.csv``: one header line, then rows; empty cells are missing values.
- ``.jsonl``: one JSON object per line; ``null`` for missing values.
- ``.parquet``: a folder of part files, one per flushed batch (each written atomically), which
  ``pandas.read_parquet(folder)`` reads as one table. Needs pyarrow.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from lavis_ext import facs
from lavis_ext.errors import InputError, UsageError
from lavis_ext.io import atomic_write

AU_NUMBERS = sorted(facs.ACTION_UNITS)
AU_COLUMNS = [f"AU{n:02d}" for n in AU_NUMBERS]
LANDMARK_COLUMNS = [f"lm{i}_{axis}" for i in range(5) for axis in ("x", "y")]
COLUMNS = (["file", "frame", "timestamp_s", "face_id", "confidence", "x", "y", "w", "h"]
           + LANDMARK_COLUMNS + ["caption"] + AU_COLUMNS + ["emotion", "error"])
_STR = {"file", "caption", "emotion", "error"}
_INT = {"frame", "face_id", *AU_COLUMNS}
FORMATS = (".csv", ".jsonl", ".parquet")


def face_row(file: str, frame: int | None, timestamp_s: float | None, face_id: int,
             described: Any) -> dict[str, Any]:
    """A row for one described face (``described``: a ``faces.DescribedFace``)."""
    face = described.face
    row = blank_row(file, frame, timestamp_s)
    row.update(face_id=face_id, confidence=face.confidence, caption=described.caption,
               emotion=";".join(described.emotions) or None)
    row.update(zip(("x", "y", "w", "h"), face.box))
    for i, (x, y) in enumerate(face.landmarks or []):
        row[f"lm{i}_x"], row[f"lm{i}_y"] = x, y
    # 1 where the caption says the AU is there, 0 where it says it is not, empty otherwise.
    for au in described.negated_aus:
        row[f"AU{au:02d}"] = 0
    for au in described.aus:
        row[f"AU{au:02d}"] = 1
    return row


def blank_row(file: str, frame: int | None = None, timestamp_s: float | None = None,
              error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(file=file, frame=frame, timestamp_s=timestamp_s, error=error)
    return row


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Rounded floats and one-line strings (a newline would break the torn-line check)."""
    out = {}
    for key in COLUMNS:
        value = row.get(key)
        if isinstance(value, float):
            value = round(value, 6 if key in ("confidence", "timestamp_s") else 2)
        elif isinstance(value, str):
            value = " ".join(value.splitlines())
        out[key] = value
    return out


def _typed(key: str, text: str) -> Any:
    if text == "":
        return None
    if key in _STR:
        return text
    return int(float(text)) if key in _INT else float(text)


@dataclass
class TableState:
    """What a previous run wrote, as much as a rerun needs to skip and to continue tracks."""

    rows: int = 0
    files_done: set[str] = field(default_factory=set)  # rows without a frame: images, errors
    frames_done: dict[str, set[int]] = field(default_factory=dict)
    last_frame: dict[str, tuple[int, list[tuple[int, tuple[float, ...]]]]] = field(
        default_factory=dict)
    next_id: dict[str, int] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        file, frame = row["file"], row["frame"]
        if frame is None:
            self.files_done.add(file)
            return
        self.frames_done.setdefault(file, set()).add(frame)
        last, tracks = self.last_frame.get(file, (-1, []))
        if frame > last:
            last, tracks = frame, []
            self.last_frame[file] = (last, tracks)
        face_id = row.get("face_id")
        if face_id is not None:
            self.next_id[file] = max(self.next_id.get(file, 0), face_id + 1)
            if frame == last:
                tracks.append((face_id, tuple(row[k] for k in ("x", "y", "w", "h"))))


class Table:
    """Append-only table file; ``read()`` streams back what is there (typed values)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in FORMATS:
            raise UsageError(f"--out {self.path}: expected a file name ending in "
                             f"{', '.join(FORMATS)}")
        if self.format == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UsageError(f"--out {self.path}: Parquet needs pyarrow (pip install "
                                 "pyarrow), or write .csv or .jsonl") from None
            if self.path.exists() and not self.path.is_dir():
                raise InputError(f"--out {self.path}: a Parquet table here is a folder of "
                                 "part files, but this is a file; choose another name")
        self._check_existing()

    # -- reading -----------------------------------------------------------------------------
    def _check_existing(self) -> None:
        """Refuse a file of another layout, and cut a torn last line left by a crash."""
        if self.format == ".parquet" or not self.path.is_file():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                handle.truncate(cut)
                print(f"expblip describe: note: {self.path}: dropped an unfinished last line "
                      "(the previous run stopped while writing it)")
                data = data[:cut]
        if not data:
            return
        first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
        if self.format == ".csv":
            found = next(csv.reader([first]))
        else:
            try:
                found = list(json.loads(first))
            except (json.JSONDecodeError, TypeError):
                raise InputError(f"{self.path}:1: not a JSON object; write to a new --out")
        if found != COLUMNS:
            missing = [c for c in COLUMNS if c not in found]
            raise InputError(f"{self.path}:1: columns differ from this version's table "
                             f"(missing {missing[:5] or 'none'}, "
                             f"{len(found)} found, {len(COLUMNS)} expected); "
                             "write to a new --out")

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def read(self) -> Iterator[dict[str, Any]]:
        if self.format == ".parquet":
            import pyarrow.parquet as pq

            for part in self._parts():
                yield from pq.read_table(part).to_pylist()
            return
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8", newline="") as handle:
            if self.format == ".csv":
                for row in csv.DictReader(handle):
                    yield {k: _typed(k, row.get(k) or "") for k in COLUMNS}
            else:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as err:
                            raise InputError(f"{self.path}:{number}: not JSON ({err})")

    def state(self) -> TableState:
        state = TableState()
        for row in self.read():
            state.add(row)
        return state

    # -- writing -----------------------------------------------------------------------------
    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` and make them durable before returning (one batch)."""
        if not rows:
            return
        rows = [_clean(r) for r in rows]
        if self.format == ".parquet":
            self._append_parquet(rows)
            return
        buffer = io.StringIO()
        fresh = not self.path.is_file() or self.path.stat().st_size == 0
        if self.format == ".csv":
            writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
            if fresh:
                writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                buffer.write(json.dumps(row) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())

    def _append_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string() if c in _STR else pa.int64() if c in _INT
                             else pa.float64()) for c in COLUMNS])
        table = pa.Table.from_pylist(rows, schema=schema)
        self.path.mkdir(parents=True, exist_ok=True)
        parts = self._parts()
        number = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        atomic_write(self.path / f"part-{number:06d}.parquet",
                     lambda handle: pq.write_table(table, handle))
