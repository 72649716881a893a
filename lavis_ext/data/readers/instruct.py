"""Instruction-style benchmark annotations (FEA-20K, FABA): items whose images live in other
datasets, found through a map from the source dataset's name to a local folder.

Two item layouts are read, one per line (JSONL) or as a JSON list:

- Facial-R1's keys: ``id``, ``dataset`` (the image's source), ``image``, ``question``,
  ``AUs`` (``["AU1", "AU4"]``), ``labels`` (``["Sadness"]``), ``description``, ``meta_info``;
- LLaVA conversations: ``id``, ``image``, ``conversations`` (``[{"from": "human", ...},
  {"from": "gpt", "value": ...}]``); the answers become the reference text; ``AUs`` and
  ``labels`` are read when present.

An item that lists AUs codes all 27 AUs of ``lavis_ext.facs``: 1 when listed, else 0 (as the
RAF-AU reader does); an item without an ``AUs`` key codes none. Emotion labels are mapped to
our names (``facs.canonical_emotion``); ones outside the basic eight are kept lowercase and
counted. Images: with ``image_roots`` ({source name: folder}) each image is looked up under its
source's folder, first at its path, then by its file name anywhere below; items whose image
is not found are skipped and counted per source. Without ``image_roots`` the image stays
``<source>/<path>`` (relative to the images root) and that is noted.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from lavis_ext import facs
from lavis_ext.data.readers.common import DatasetFormatError, SkipReport, require_file
from lavis_ext.data.records import Record

_AU_ITEM = re.compile(r"^\s*(?:au)?\s*0*(\d{1,2})[a-e]?\s*$", re.IGNORECASE)


def source_key(name: str) -> str:
    """``"RAF-DB"``, ``"raf_db"``, ``"RafDB"`` -> ``"rafdb"``: how sources are matched."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def parse_image_roots(value: str | Mapping[str, str] | None) -> dict[str, Path] | None:
    """``"rafdb=/data/raf,affectnet=/data/an"`` or a mapping -> {source key: folder}."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        pairs = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            name, sep, folder = part.partition("=")
            if not sep or not name.strip() or not folder.strip():
                raise DatasetFormatError(f"image_roots: expected NAME=FOLDER[,NAME=FOLDER], "
                                         f"got {part!r}")
            pairs.append((name.strip(), folder.strip()))
    else:
        pairs = list(value.items())
    return {source_key(name): Path(folder) for name, folder in pairs}


def iter_items(path: Path, report: SkipReport) -> Iterator[tuple[int | None, Any]]:
    """(line or index, item) of a JSON list or a JSONL file; unreadable lines are skipped."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{path}: not valid JSON ({err})") from None
        for index, item in enumerate(data):
            report.read()
            yield index, item
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        report.read()
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as err:
            report.skip("not valid JSON", path, line_no, err.msg)


class ImageFinder:
    """Finds an item's image under its source's folder; indexes a folder by file name once."""

    def __init__(self, roots: dict[str, Path] | None) -> None:
        self.roots = roots
        self._by_name: dict[str, dict[str, Path]] = {}

    def find(self, source: str, image: str) -> tuple[str | None, str]:
        """(path for the record, or None; the skip reason when None)."""
        if self.roots is None:
            return f"{source_key(source) or 'unknown'}/{image}", ""
        key = source_key(source)
        root = self.roots.get(key)
        if root is None:
            return None, f"no image root for source {source!r}"
        direct = root / image
        if direct.is_file():
            return str(direct), ""
        if key not in self._by_name:
            self._by_name[key] = {p.name: p for p in sorted(root.rglob("*")) if p.is_file()} \
                if root.is_dir() else {}
        found = self._by_name[key].get(Path(image).name)
        if found is not None:
            return str(found), ""
        return None, f"image not found under the {source!r} root"


def _gpt_answers(item: Mapping[str, Any]) -> list[str]:
    turns = item.get("conversations") or []
    return [t["value"].strip() for t in turns if isinstance(t, dict)
            and t.get("from") in ("gpt", "assistant") and isinstance(t.get("value"), str)
            and t["value"].strip()]


def _questions(item: Mapping[str, Any]) -> list[str]:
    if isinstance(item.get("question"), str):
        return [item["question"]]
    turns = item.get("conversations") or []
    return [t["value"].replace("<image>", "").strip() for t in turns if isinstance(t, dict)
            and t.get("from") in ("human", "user") and isinstance(t.get("value"), str)]


def read_file(path: Path, split: str, dataset: str, report: SkipReport, finder: ImageFinder,
              *, default_source: str | None = None, seen: set[str] | None = None
              ) -> list[Record]:
    """The records of one annotation file, all in ``split``."""
    require_file(path, f"{dataset} annotation file")
    report.add_file(path)
    if finder.roots is None:
        report.note("images not resolved (no image_roots): image = <source>/<path>")
    seen = set() if seen is None else seen
    records: list[Record] = []
    for where, item in iter_items(path, report):
        if not isinstance(item, dict):
            report.skip("not an object", path, where, f"{item!r:.60}")
            continue
        image = item.get("image")
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if not isinstance(image, str) or not image.strip():
            report.skip("no image field", path, where, f"keys {sorted(item)}")
            continue
        source, relative = item.get("dataset") or default_source, image
        if not source:  # "affectnet/1/x.jpg": the first folder names the source
            parts = Path(image).parts
            source, relative = parts[0], str(Path(*parts[1:])) if len(parts) > 1 else image
        item_id = str(item.get("id", Path(image).stem))
        if item_id in seen:
            report.skip("duplicate id", path, where, item_id)
            continue
        aus, bad, outside = _aus(item.get("AUs"))
        if outside:
            report.note("AUs outside the 27 FACS AUs (dropped)", len(outside))
        if bad:
            report.skip("unreadable AU", path, where, f"{bad} (expected e.g. 'AU4')")
            continue
        emotions = []
        for label in item.get("labels") or []:
            name = facs.canonical_emotion(str(label))
            if name not in facs.BASIC_EMOTIONS:
                report.note(f"emotion labels outside the basic eight (kept): {name}")
            emotions.append(name)
        texts = [item["description"].strip()] if isinstance(item.get("description"), str) \
            and item["description"].strip() else _gpt_answers(item)
        if not texts:
            report.note("items without a reference text (description or answer)")
        if item.get("AUs") is None:
            report.note("items without AU labels")
        found, reason = finder.find(str(source), relative)
        if found is None:
            report.skip(reason, path, where, image)
            continue
        seen.add(item_id)
        records.append({
            "image": found, "image_id": f"{dataset}_{item_id}", "dataset": dataset,
            "subject": None, "split": split, "aus": aus, "emotions": emotions,
            "caption": texts,
            "meta": {"source_dataset": str(source), "source_image": image,
                     "question": _questions(item), "meta_info": item.get("meta_info")},
        })
    return records


def _aus(value: Any) -> tuple[dict[str, int], list[Any], list[int]]:
    """(27 AUs coded 1/0, entries not read as an AU, AU numbers outside the 27)."""
    if value is None:
        return {}, [], []
    if not isinstance(value, list):
        return {}, [value], []
    listed, bad, outside = set(), [], []
    for entry in value:
        match = _AU_ITEM.match(str(entry))
        if not match:
            bad.append(entry)
        elif int(match.group(1)) in facs.ACTION_UNITS:
            listed.add(int(match.group(1)))
        else:
            outside.append(int(match.group(1)))
    return {str(au): int(au in listed) for au in facs.AU_NUMBERS}, bad, outside


def read_splits(root: Path, dataset: str, stems: Mapping[str, str], report: SkipReport, *,
                image_roots: str | Mapping[str, str] | None = None,
                given: Mapping[str, str | None] | None = None) -> list[Record]:
    """Every split's file under ``root`` (``<stem>.jsonl`` or ``.json``, or the file given for
    it); a split without a file is noted, none at all is an error."""
    finder = ImageFinder(parse_image_roots(image_roots))
    seen: set[str] = set()
    records: list[Record] = []
    found_any = False
    for split, stem in stems.items():
        name = (given or {}).get(split)
        candidates = [root / name] if name else [root / f"{stem}{s}" for s in (".jsonl", ".json")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            if name:
                raise DatasetFormatError(f"{dataset}: {split}_file not found: {root / name}")
            report.note(f"no {split} file ({stem}.jsonl or .json)")
            continue
        found_any = True
        records += read_file(path, split, dataset, report, finder, seen=seen)
    if not found_any:
        raise DatasetFormatError(
            f"{dataset}: none of " + ", ".join(f"{s}.jsonl/.json" for s in stems.values())
            + f" under {root}; name the files with train_file / test_file")
    return records
