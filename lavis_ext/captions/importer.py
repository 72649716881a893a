"""`expblip import-captions`: attach captions from a LAVIS caption-annotation file to records.

The official Exp-BLIP repository shares the AU, emotion and fused captions it trained on, in
LAVIS's caption-annotation format: a JSON list of ``{"image": PATH, "caption": TEXT or
[TEXT, ...], ...}``. They are the only exact copy of the GPT-3.5 text (those model snapshots
are retired). Their image paths start at the authors' own data root, so an entry is matched
to the record whose ``image`` path it ends with (or that ends with it): the shorter of the
two paths must be a whole-component suffix of the longer one, so ``/home/x/data/RAF-AU/
aligned/0001.jpg`` matches the record ``aligned/0001.jpg``, but ``F001/T1/0001.jpg`` never
matches ``F002/T1/0001.jpg``. An entry that fits several records equally well is ambiguous
and is not attached.

ExpLLM's released descriptions (``--format expllm``; auto-detected) are a JSON list of
``{"file_name", "emo", "au", "description"}``: the description is a three-part chain of
thought and is filed as ``captions["cot"]`` by default. ``file_name`` is matched like an
image path (a bare name fits the one record whose path ends with it). ``au`` holds 24
predicted scores whose AU names were never published, so it is ignored. A row is skipped,
with its reason counted, when it lacks a file name or a description, when the description
lacks a heading of the three parts, or when ``emo`` disagrees with the matched record's
emotion labels.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from lavis_ext.captions.paths import DEFAULT_WORKDIR, captions_path
from lavis_ext.data.records import Record, RecordError, add_captions, load_records, save_records
from lavis_ext.errors import InputError, NothingSucceeded, UsageError
from lavis_ext.io import read_json_list

_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
EXAMPLES = 5
SOURCE_FORMATS = ("auto", "lavis", "expllm")
DEFAULT_KIND = {"expllm": "cot"}
EXPLLM_FIELDS = ("file_name", "emo", "au", "description")


def path_parts(path: str) -> tuple[str, ...]:
    """Components of a path written on any system (``\\`` or ``/``), without ``.``/root."""
    text = str(path).replace("\\", "/")
    return tuple(p for p in PurePosixPath(text).parts if p not in ("/", ".", ""))


@dataclass
class ImportReport:
    kind: str
    entries: int = 0  # items in the caption file
    captions_read: int = 0  # non-empty caption texts in those items
    entries_matched: int = 0
    captions_added: int = 0  # texts new to their record (a repeated text is kept once)
    unmatched: int = 0
    ambiguous: int = 0
    unmatched_examples: list[str] = field(default_factory=list)
    ambiguous_examples: list[str] = field(default_factory=list)
    records: int = 0
    records_with_kind: int = 0  # records holding captions[kind] after the import
    records_without: int = 0
    records_without_examples: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows left out
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples) < EXAMPLES:
            self.skipped_examples.append(f"{where}: {reason}")

    def format(self) -> str:
        lines = [f"import-captions {self.kind}: {self.entries} entries, "
                 f"{self.captions_read} captions read",
                 f"  matched      {self.entries_matched} entries -> {self.captions_added} "
                 f"captions added",
                 f"  unmatched    {self.unmatched} entries"
                 + (f" (e.g. {', '.join(self.unmatched_examples)})" if self.unmatched else ""),
                 f"  ambiguous    {self.ambiguous} entries"
                 + (f" (e.g. {', '.join(self.ambiguous_examples)})" if self.ambiguous else ""),
                 f"  records      {self.records}: {self.records_with_kind} with captions"
                 f"[{self.kind!r}], {self.records_without} without"
                 + (f" (e.g. {', '.join(self.records_without_examples)})"
                    if self.records_without else "")]
        if self.skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())
            lines.insert(4, f"  skipped      {sum(self.skipped.values())} entries ({reasons}; "
                            f"e.g. {'; '.join(self.skipped_examples)})")
        return "\n".join(lines)


def read_caption_annotations(path: str | Path) -> list[tuple[str, list[str]]]:
    """(image path, caption texts) per item of a LAVIS caption-annotation JSON file."""
    path = Path(path)
    data = read_json_list(path, '{"image", "caption"} items (LAVIS caption annotations)',
                          "--from")
    items = []
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object, got {type(item).__name__}")
        image, caption = item.get("image"), item.get("caption")
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: 'image' must be a non-empty path string, got {image!r}")
        if isinstance(caption, str):
            texts = [caption]
        elif isinstance(caption, list) and all(isinstance(c, str) for c in caption):
            texts = list(caption)
        else:
            raise InputError(f"{where}: 'caption' must be a string or a list of strings, "
                             f"got {caption!r:.80}")
        items.append((image, [" ".join(t.split()) for t in texts if t.strip()]))
    return items


class SuffixIndex:
    """Finds the record whose image path and a given path agree on every component of the
    shorter of the two (the rest is a root prefix that differs)."""

    def __init__(self, records: Sequence[Record]):
        self._by_name: dict[str, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
        for i, record in enumerate(records):
            parts = path_parts(record["image"])
            if parts:
                self._by_name[parts[-1]].append((i, parts))

    def find(self, path: str) -> list[int]:
        """Indices of the best-matching records: one (a match), none, or several (ambiguous)."""
        parts = path_parts(path)
        if not parts:
            return []
        best, found = 0, []
        for index, candidate in self._by_name.get(parts[-1], []):
            n = min(len(parts), len(candidate))
            if parts[-n:] != candidate[-n:]:
                continue
            if n > best:
                best, found = n, [index]
            elif n == best:
                found.append(index)
        return found


def detect_source_format(path: str | Path) -> str:
    """``expllm`` when the file's first item has ExpLLM's ``file_name`` and ``description``,
    else ``lavis``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "lavis"  # the LAVIS reader says what is wrong
    first = data[0] if isinstance(data, list) and data else None
    if isinstance(first, Mapping) and "file_name" in first and "description" in first:
        return "expllm"
    return "lavis"


@dataclass
class ExpLLMRow:
    """One usable row of ExpLLM's description file."""
    where: str
    file_name: str
    emotion: str
    description: str


def read_expllm_descriptions(path: str | Path) -> tuple[list[ExpLLMRow], ImportReport]:
    """The usable rows of an ExpLLM description file, and a report counting the rows left out
    (no file name, no description, a three-part heading missing) with their reasons."""
    from lavis_ext.metrics.cot import split_cot

    path = Path(path)
    data = read_json_list(path, f"ExpLLM rows ({', '.join(EXPLLM_FIELDS)})", "--from")
    report = ImportReport(kind="", entries=len(data))
    rows = []
    for i, item in enumerate(data):
        where = f"[{i}]"
        if not isinstance(item, Mapping):
            report.skip("not an object", where)
            continue
        name, text = item.get("file_name"), item.get("description")
        if not isinstance(name, str) or not name.strip():
            report.skip("no file_name", where)
            continue
        where = f"[{i}] {name}"
        if not isinstance(text, str) or not text.strip():
            report.skip("no description", where)
            continue
        missing = split_cot(text).missing
        if missing:
            report.skip(f"no '{missing[0]}' heading", where)
            continue
        emo = item.get("emo")
        lines = (" ".join(line.split()) for line in text.splitlines())
        rows.append(ExpLLMRow(where, name.strip(), str(emo).strip() if emo else "",
                              "\n".join(line for line in lines if line)))
    return rows, report


def import_captions(records: list[Record], items: Sequence[tuple[str, list[str]]],
                    kind: str, *, emotions: Sequence[str] | None = None,
                    report: ImportReport | None = None) -> ImportReport:
    """Attach each item's captions to its record as ``captions[kind]`` (in place).

    ``emotions`` (one per item, "" for none): the emotion each item's text concludes; an item
    whose emotion is not among its record's labels is skipped (counted in ``report``).
    """
    from lavis_ext.facs import canonical_emotion

    report = report or ImportReport(kind=kind, entries=len(items))
    report.kind, report.records = kind, len(records)
    index = SuffixIndex(records)
    for k, (image, texts) in enumerate(items):
        report.captions_read += len(texts)
        found = index.find(image)
        said = canonical_emotion(emotions[k]) if emotions and emotions[k] else ""
        labels = [canonical_emotion(e) for e in records[found[0]]["emotions"]] \
            if len(found) == 1 else []
        if len(found) == 1 and said and labels and said not in labels:
            report.skip("emo differs from the record's emotions",
                        f"{image} ({said} vs {', '.join(labels)})")
        elif len(found) == 1:
            record = records[found[0]]
            before = len((record.get("captions") or {}).get(kind) or [])
            add_captions(record, kind, texts)
            report.entries_matched += 1
            report.captions_added += len(record["captions"][kind]) - before
        elif not found:
            report.unmatched += 1
            if len(report.unmatched_examples) < EXAMPLES:
                report.unmatched_examples.append(image)
        else:
            report.ambiguous += 1
            if len(report.ambiguous_examples) < EXAMPLES:
                report.ambiguous_examples.append(
                    f"{image} ({len(found)} records, e.g. {records[found[0]]['image']})")
    for record in records:
        if (record.get("captions") or {}).get(kind):
            report.records_with_kind += 1
        else:
            report.records_without += 1
            if len(report.records_without_examples) < EXAMPLES:
                report.records_without_examples.append(record["image"])
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind",
                        help="caption kind to file them under (captions[KIND]), e.g. au-llm "
                             "for the released GPT AU captions, fuse for the fused ones; "
                             "default cot for ExpLLM's descriptions")
    parser.add_argument("--from", dest="source", required=True, type=Path,
                        help="LAVIS caption-annotation JSON: [{\"image\", \"caption\"}, ...], "
                             "or ExpLLM's descriptions: [{\"file_name\", \"emo\", \"au\", "
                             "\"description\"}, ...]")
    parser.add_argument("--format", dest="source_format", choices=SOURCE_FORMATS,
                        default="auto", help="how to read --from (default auto: expllm when "
                                             "its rows have file_name and description)")
    parser.add_argument("--ann", required=True, type=Path, help="records JSON to attach to")
    parser.add_argument("--out", type=Path,
                        help="records JSON to write (atomically; may equal --ann); default: "
                             "the caption path rule, WORKDIR/captions/<dataset>_<split>.json "
                             "of the records (lavis_ext.captions.paths)")
    parser.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                        help=f"work folder for the default --out (default {DEFAULT_WORKDIR}, "
                             f"the paper pipeline's and the project configs')")


def run(args: argparse.Namespace) -> int:
    fmt = args.source_format
    if fmt == "auto":
        fmt = detect_source_format(args.source)
    args.kind = args.kind or DEFAULT_KIND.get(fmt)
    if not args.kind:
        raise UsageError("--kind: name the caption kind to file the captions under, e.g. "
                         "au-llm")
    if not _KIND.match(args.kind):
        raise UsageError(f"--kind: {args.kind!r} is not a caption kind name (lowercase letters, "
                         f"digits, '-' and '_', e.g. au-llm)")
    emotions, report = None, None
    if fmt == "expllm":
        rows, report = read_expllm_descriptions(args.source)
        items = [(row.file_name, [row.description]) for row in rows]
        emotions = [row.emotion for row in rows]
    else:
        items = read_caption_annotations(args.source)
    try:
        records = load_records(args.ann)
    except (RecordError, FileNotFoundError) as err:
        raise InputError(f"--ann: {err}") from err
    report = import_captions(records, items, args.kind, emotions=emotions, report=report)
    print(report.format())
    if report.entries_matched == 0:
        raise NothingSucceeded(f"no entry of {args.source} matched an image of {args.ann}; "
                               f"nothing written (compare the paths above with the records' "
                               f"'image' fields)")
    out = args.out or default_out(records, args.workdir, args.ann)
    save_records(records, out)
    print(f"wrote {out}")
    return 0


def default_out(records: Sequence[Record], workdir: Path, where: Path) -> Path:
    """The rule's path for records of one dataset and one split (else ask for --out)."""
    pairs = sorted({(str(r.get("dataset")), str(r.get("split"))) for r in records})
    if len(pairs) != 1:
        raise UsageError(f"--ann {where}: records of {len(pairs)} dataset/split pairs "
                         f"({pairs[:4]}); give --out, or one prepared split file per import")
    try:
        return captions_path(workdir, *pairs[0])
    except InputError as err:
        raise InputError(f"--ann {where}: {err}") from None
