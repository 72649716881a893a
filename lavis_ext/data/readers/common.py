"""What every reader shares: the skip report, clear file errors and AU-label parsing.

Readers never drop a row silently: each skipped row is counted under a reason, and the first
few are kept with their file and line so that a user can open the file and look.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from lavis_ext.errors import InputError, UsageError
from lavis_ext.facs import ACTION_UNITS

EXAMPLES_PER_REASON = 20


class DatasetFormatError(InputError):
    """A dataset file is missing or does not have the layout its reader expects."""


class SkipReport:
    """Rows read, kept and skipped (by reason, with file:line examples), plus notes."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.rows_read = 0
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.notes: Counter[str] = Counter()
        self.files: list[str] = []

    def read(self, count: int = 1) -> None:
        self.rows_read += count

    def skip(self, reason: str, path: str | Path, line: int | None = None,
             detail: str = "") -> None:
        """Count one skipped row; keep its location among the first examples of its reason."""
        self.skipped[reason] += 1
        where = f"{path}:{line}" if line is not None else str(path)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{where}: {detail}" if detail else where)

    def note(self, what: str, count: int = 1) -> None:
        """Count something worth telling that does not drop a row (e.g. an extra field)."""
        self.notes[what] += count

    def add_file(self, path: str | Path) -> None:
        self.files.append(str(path))

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "files_read": len(self.files),
            "rows_read": self.rows_read,
            "rows_skipped": self.rows_skipped,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": self.examples,
            "notes": dict(sorted(self.notes.items())),
        }


def text_lines(path: str | Path, report: "SkipReport"):
    """(line number, stripped line) for each non-blank line of a text label file (a BOM is
    tolerated); each is counted as read."""
    with Path(path).open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            report.read()
            yield line_no, text


def csv_data_rows(rows: Iterable[list[str]], header: list[str], path: str | Path,
                  report: "SkipReport"):
    """(line number, row) for each data row of a CSV read with a header: blank rows are
    passed over, rows with the wrong number of columns are reported as skipped."""
    for line, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        report.read()
        if len(row) != len(header):
            report.skip("wrong number of columns", path, line,
                        f"{len(row)} columns, header has {len(header)}")
            continue
        yield line, row


def progress(iterable, desc: str, total: int | None = None):
    """A progress bar on a terminal, silent in logs and tests (tqdm's ``disable=None``)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False)


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(f"{what}: directory not found: {path}")
    return path


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{what}: file not found: {path}")
    return path


_AU_HEADER = re.compile(r"^\s*['\"]?\s*(?:au)?\s*_?\s*0*(\d+)\s*['\"]?\s*$", re.IGNORECASE)


def au_number_from_header(name: str) -> int | None:
    """``'AU 1'``, ``AU01``, ``au1``, ``1`` -> 1; anything else -> None."""
    match = _AU_HEADER.match(str(name))
    return int(match.group(1)) if match else None


def select_aus(available: Iterable[int], wanted: Iterable[int] | str | None,
               default: Iterable[int]) -> list[int]:
    """The AUs a reader keeps: ``None`` -> the dataset's protocol set, ``"all"`` -> every AU
    column that is one of the 27 FACS AUs of ``lavis_ext.facs``, else the given numbers."""
    available = set(available)
    if wanted is None:
        chosen = list(default)
    elif isinstance(wanted, str):
        if wanted != "all":
            raise UsageError(f"AU selection must be 'all' or a list of numbers, got {wanted!r}")
        chosen = sorted(a for a in available if a in ACTION_UNITS)
    else:
        chosen = sorted(int(a) for a in wanted)
    return chosen


def parse_int(text: Any) -> int:
    """An integer cell that may be written as ``1``, ``1.0``, `` 1 `` or ``'1'``."""
    if isinstance(text, bool):
        raise ValueError(f"not an integer: {text!r}")
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        if text != int(text):
            raise ValueError(f"not an integer: {text!r}")
        return int(text)
    cleaned = str(text).strip().strip("'\"").strip()
    try:
        return int(cleaned)
    except ValueError:
        value = float(cleaned)  # raises ValueError with the text
        if value != int(value):
            raise ValueError(f"not an integer: {text!r}") from None
        return int(value)
