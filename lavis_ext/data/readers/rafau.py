"""RAF-AU: ``RAFAU_label.txt``, one line per image: ``<name>.jpg <AU string>``.

The AU string joins tokens with ``+``; ``null`` means no AU. A token is a number with an
optional region prefix (L, R, B, T ...) and an optional letter suffix (``17``, ``B22``,
``L12``, ``25A``): presence in any region is presence. AUs outside the 27 of
``lavis_ext.facs`` are dropped (and counted). Fields after the second are ignored (counted).
Every one of the 27 AUs is coded: 1 when named, else 0.
"""
from __future__ import annotations

import re
from pathlib import Path

from lavis_ext.data.readers.common import SkipReport, require_dir, require_file, text_lines
from lavis_ext.data.records import Record
from lavis_ext.facs import AU_NUMBERS

NAME = "rafau"
LABEL_FILE = "RAFAU_label.txt"
DEFAULT_IMAGE_PATTERN = "aligned/{stem}_aligned.jpg"
_TOKEN = re.compile(r"^([A-Za-z]*)(\d+)([A-Za-z]*)$")


def parse_au_string(text: str) -> tuple[set[int], list[str]]:
    """``'17+B22+T24'`` -> ({17, 22, 24}, []); returns the tokens it could not parse too."""
    if text.strip().lower() == "null":
        return set(), []
    found, bad = set(), []
    for token in text.split("+"):
        token = token.strip()
        match = _TOKEN.match(token)
        if match:
            found.add(int(match.group(2)))
        else:
            bad.append(token)
    return found, bad


def read(root: str | Path, report: SkipReport, *, image_pattern: str = DEFAULT_IMAGE_PATTERN,
         **_: object) -> list[Record]:
    root = require_dir(root, "RAF-AU root")
    path = require_file(root / LABEL_FILE, "RAF-AU label file")
    report.add_file(path)
    records: list[Record] = []
    seen: set[str] = set()
    known = set(AU_NUMBERS)
    for line_no, line in text_lines(path, report):
        fields = line.split()
        if len(fields) < 2:
            report.skip("no AU field", path, line_no, repr(line.rstrip()))
            continue
        if len(fields) > 2:
            report.note("lines with extra fields (ignored)")
        name, au_text = fields[0], fields[1]
        found, bad = parse_au_string(au_text)
        if bad:
            report.skip("unreadable AU token", path, line_no, f"{bad} in {au_text!r}")
            continue
        dropped = found - known
        if dropped:
            report.note("AU tokens outside the 27 FACS AUs (dropped)", len(dropped))
        stem = name.rsplit(".", 1)[0]
        if stem in seen:
            report.skip("duplicate image", path, line_no, name)
            continue
        seen.add(stem)
        aus = {str(au): int(au in found) for au in AU_NUMBERS}
        records.append({
            "image": image_pattern.format(stem=stem, name=name), "image_id": stem,
            "dataset": NAME, "subject": None, "split": "train", "aus": aus,
            "emotions": [], "caption": [], "meta": {"au_string": au_text},
        })
    return records
