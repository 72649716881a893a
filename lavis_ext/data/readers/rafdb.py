"""RAF-DB: ``<subset>/EmoLabel/list_patition_label.txt`` (sic), lines ``train_00001.jpg 5``.

``subset="compound"`` (what the paper uses): labels 1-11 become emotion pairs
(``lavis_ext.facs.RAFDB_COMPOUND``). ``subset="basic"``: labels 1-7 (``RAFDB_BASIC``). Both
are split by the ``train_``/``test_`` name prefix, the release's own partition (compound:
3,162 / 792, Table 1 of the paper); a name without either prefix is skipped and counted.
Images: ``<subset>/Image/aligned/<stem>_aligned.jpg``.
"""
from __future__ import annotations

from pathlib import Path

from lavis_ext.data.readers.common import SkipReport, require_dir, require_file, text_lines
from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError
from lavis_ext.facs import RAFDB_BASIC, RAFDB_COMPOUND

NAME = "rafdb"
LABEL_FILE = "EmoLabel/list_patition_label.txt"
DEFAULT_IMAGE_PATTERN = "Image/aligned/{stem}_aligned.jpg"
SUBSETS = ("compound", "basic")


def read(root: str | Path, report: SkipReport, *, subset: str = "compound",
         image_pattern: str = DEFAULT_IMAGE_PATTERN, **_: object) -> list[Record]:
    if subset not in SUBSETS:
        raise UsageError(f"RAF-DB subset must be one of {SUBSETS}, got {subset!r}")
    root = require_dir(root, "RAF-DB root")
    path = require_file(root / subset / LABEL_FILE, f"RAF-DB {subset} label file")
    report.add_file(path)
    table = RAFDB_COMPOUND if subset == "compound" else RAFDB_BASIC
    records: list[Record] = []
    seen: set[str] = set()
    for line_no, line in text_lines(path, report):
        fields = line.split()
        if len(fields) != 2:
            report.skip("wrong number of fields", path, line_no,
                        f"{line.rstrip()!r} (expected '<name>.jpg <label>')")
            continue
        name, label = fields
        try:
            code = int(label)
        except ValueError:
            report.skip("not an integer", path, line_no, repr(label))
            continue
        if code not in table:
            report.skip("value out of range", path, line_no,
                        f"label {code} (expected {min(table)}-{max(table)})")
            continue
        stem = name.rsplit(".", 1)[0]
        if stem in seen:
            report.skip("duplicate image", path, line_no, name)
            continue
        seen.add(stem)
        value = table[code]
        emotions = list(value) if isinstance(value, tuple) else [value]
        if stem.startswith("train_"):
            split = "train"
        elif stem.startswith("test_"):
            split = "test"
        else:
            report.skip("name has no train_/test_ prefix", path, line_no, name)
            continue
        records.append({
            "image": f"{subset}/{image_pattern.format(stem=stem, name=name)}",
            "image_id": f"{subset}_{stem}", "dataset": NAME, "subject": None,
            "split": split, "aus": {}, "emotions": emotions, "caption": [],
            "meta": {"label": code, "subset": subset},
        })
    return records
