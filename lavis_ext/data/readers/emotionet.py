"""EmotioNet manually annotated set: ``.xlsx`` or ``.csv``; also the challenge ``dataFile_*.txt``.

Main file (``EmotioNet_FACS_aws_2020_24600.xlsx`` or ``.csv``): columns ``URL``, ``URL orig``,
then AU columns whose headers literally carry quotes and a space (``'AU 1'``). URL cells may
carry stray single quotes. Values 0, 1, or 999 (not annotated -> null). The image is the URL's
basename under ``image_dir``.

Challenge lists (``dataFile_XXXX.txt``): tab separated, no header: URL, original URL, then
AU1..AU60 (AU k at column k+1).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Iterator

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, au_number_from_header,
                                           parse_int, require_dir, require_file, select_aus)
from lavis_ext.data.records import Record
from lavis_ext.facs import AU_SUBSETS

NAME = "emotionet"
NOT_ANNOTATED = 999
DEFAULT_IMAGE_DIR = "images"


def find_label_files(root: Path, labels_file: str | None) -> list[Path]:
    """The given file, else the .xlsx, else the .csv, else the ``dataFile_*.txt`` lists."""
    if labels_file:
        return [require_file(root / labels_file, "EmotioNet label file")]
    for pattern in ("*.xlsx", "*.csv"):
        found = sorted(root.glob(pattern))
        if found:
            return found[:1]
    found = sorted(root.glob("dataFile_*.txt"))
    if found:
        return found
    raise DatasetFormatError(
        f"EmotioNet: no label file in {root} (expected EmotioNet_FACS_*.xlsx or .csv, or "
        "dataFile_*.txt challenge lists)")


def _xlsx_rows(path: Path) -> Iterator[list[Any]]:
    try:
        import openpyxl
    except ImportError as err:  # pragma: no cover - openpyxl is a dependency
        raise DatasetFormatError(f"{path}: reading .xlsx needs the openpyxl package") from err
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types for broken files
        raise DatasetFormatError(f"{path}: not a readable .xlsx workbook ({err})") from None
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield ["" if cell is None else cell for cell in row]
    finally:
        book.close()


def _csv_rows(path: Path, delimiter: str = ",") -> Iterator[list[Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from csv.reader(handle, delimiter=delimiter)


def clean_url(value: Any) -> str:
    return str(value).strip().strip("'\"").strip()


def read(root: str | Path, report: SkipReport, *, aus: Iterable[int] | str | None = None,
         labels_file: str | None = None, image_dir: str = DEFAULT_IMAGE_DIR,
         **_: object) -> list[Record]:
    root = require_dir(root, "EmotioNet root")
    records: list[Record] = []
    seen: set[str] = set()
    for path in find_label_files(root, labels_file):
        report.add_file(path)
        if path.name.startswith("dataFile_") and path.suffix == ".txt":
            rows = _csv_rows(path, "\t")
            columns = {k: k + 1 for k in range(1, 61)}
            first_line = 1
        else:
            rows = _xlsx_rows(path) if path.suffix.lower() == ".xlsx" else _csv_rows(path)
            header = next(rows, None)
            if not header:
                raise DatasetFormatError(f"{path}: empty file (expected a header row)")
            names = [str(h).strip().strip("'\"").strip().lower() for h in header]
            if not names or names[0] != "url":
                raise DatasetFormatError(f"{path}:1: first column must be 'URL', got {header[:2]}")
            columns = {}
            for index, name in enumerate(header):
                if index >= 2 and str(name).strip():
                    number = au_number_from_header(name)
                    if number is None:
                        raise DatasetFormatError(
                            f"{path}:1: column {index + 1} header {name!r} is not an AU "
                            "column such as 'AU 1'")
                    columns[number] = index
            first_line = 2
        keep = select_aus(columns, aus, AU_SUBSETS["emotionet"])
        missing = [au for au in keep if au not in columns]
        if missing:
            raise DatasetFormatError(f"{path}: no column for AU(s) {missing}")
        width = max(columns.values()) + 1
        for line, row in enumerate(rows, start=first_line):
            if not row or not any(str(c).strip() for c in row):
                continue
            report.read()
            if len(row) < width:
                report.skip("too few columns", path, line, f"{len(row)} < {width}")
                continue
            url = clean_url(row[0])
            name = url.rsplit("/", 1)[-1]
            if not name:
                report.skip("no image name in URL", path, line, repr(row[0]))
                continue
            labels: dict[str, int | None] = {}
            bad = None
            for au in keep:
                cell = row[columns[au]]
                if str(cell).strip() == "":
                    labels[str(au)] = None
                    report.note("empty AU cells (left null)")
                    continue
                try:
                    value = parse_int(cell)
                except ValueError:
                    bad = f"'AU {au}' = {cell!r} (expected 0, 1 or 999)"
                    break
                if value == NOT_ANNOTATED:
                    labels[str(au)] = None
                elif value in (0, 1):
                    labels[str(au)] = value
                else:
                    bad = f"'AU {au}' = {cell!r} (expected 0, 1 or 999)"
                    break
            if bad:
                report.skip("value out of range", path, line, bad)
                continue
            if all(v is None for v in labels.values()):
                report.skip("no AU annotated (all 999)", path, line, name)
                continue
            stem = name.rsplit(".", 1)[0]
            if stem in seen:
                report.skip("duplicate image", path, line, name)
                continue
            seen.add(stem)
            records.append({
                "image": f"{image_dir}/{name}" if image_dir else name, "image_id": stem,
                "dataset": NAME, "subject": None, "split": "train", "aus": labels,
                "emotions": [], "caption": [], "meta": {"url": url},
            })
    return records
