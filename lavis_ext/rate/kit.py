"""The rating kit: which faces are rated and which captions each shows.

An item is one test record that every model captioned; the kit keeps the image path and one
caption per model. ``sample_items`` draws the paper's kind of selection (505 items "drawn from
all the test sets of Table 1"): a seeded sample stratified by dataset, each dataset's share
proportional to its size (largest remainders), so the draw is reproducible from N and a seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from lavis_ext.data.records import RecordError, image_file, load_records
from lavis_ext.errors import InputError, UsageError
from lavis_ext.io import read_json_list


@dataclass
class Item:
    image_id: str
    dataset: str
    image: str                       # absolute path of the file the raters see
    captions: dict[str, str] = field(default_factory=dict)  # model name -> caption


@dataclass
class KitBuild:
    items: list[Item]
    models: list[str]
    skipped: dict[str, int]          # reason -> how many records were left out


def parse_pred_flags(values: Sequence[str]) -> list[tuple[str, Path]]:
    """``--pred`` values as (model name, file): ``NAME=FILE``, or ``FILE`` named by its stem."""
    named: list[tuple[str, Path]] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).stem, value
        if not name or not path:
            raise UsageError(f"--pred {value!r}: expected FILE or NAME=FILE")
        if name in (n for n, _ in named):
            raise UsageError(f"--pred: two prediction files are named {name!r}; give them "
                             "names as NAME=FILE")
        named.append((name, Path(path)))
    if len(named) < 2:
        raise UsageError("--pred: give the predictions of at least two models (the raters "
                         "pick the most complete caption among them)")
    return named


def read_predictions(path: Path) -> dict[str, str]:
    """A predictions file (the ``evaluate`` format: a JSON list of {image_id, caption})."""
    data = read_json_list(path, "{image_id, caption}", "--pred")
    by_id: dict[str, str] = {}
    for i, entry in enumerate(data):
        if not (isinstance(entry, Mapping) and isinstance(entry.get("image_id"), (str, int))
                and not isinstance(entry.get("image_id"), bool)
                and isinstance(entry.get("caption"), str)):
            raise InputError(f"--pred: {path}[{i}]: expected an object with a string "
                             f"'image_id' and a string 'caption', got {entry!r:.120}")
        key = str(entry["image_id"])
        if key in by_id:
            raise InputError(f"--pred: {path}[{i}]: image_id {key!r} appears twice")
        by_id[key] = entry["caption"].strip()
    return by_id


def paired_sources(anns: Sequence[str | Path], images: Sequence[str | Path]
                   ) -> list[tuple[Path, Path]]:
    """(records file, images root) pairs from the repeated ``--ann`` / ``--images`` flags:
    one root for every file, or one root per file in the same order."""
    if not anns or not images:
        raise UsageError("--ann and --images: give at least one of each")
    if len(images) == 1:
        images = list(images) * len(anns)
    elif len(images) != len(anns):
        raise UsageError(f"--images: {len(images)} roots for {len(anns)} --ann files; give "
                         "one root for all, or one per --ann in the same order")
    return [(Path(a), Path(i)) for a, i in zip(anns, images)]


def build_items(preds: Sequence[tuple[str, Path]],
                sources: Sequence[tuple[str | Path, str | Path]], *,
                split: str | None = "test") -> KitBuild:
    """Items for every record of ``split`` that each model captioned and whose image exists;
    ``sources`` pairs each records file with its images root."""
    by_model = {name: read_predictions(path) for name, path in preds}
    skipped = {"other split": 0, "not captioned by every model": 0, "empty caption": 0,
               "image not found": 0}
    items: list[Item] = []
    records_with_root = []
    for ann, images in sources:
        try:
            records = load_records(ann)
        except (RecordError, FileNotFoundError) as err:
            raise InputError(f"--ann: {err}") from err
        root = Path(images).resolve()
        records_with_root += [(record, root) for record in records]
    for record, root in records_with_root:
        if split and record["split"] != split:
            skipped["other split"] += 1
            continue
        texts = {name: captions.get(record["image_id"]) for name, captions in by_model.items()}
        if any(text is None for text in texts.values()):
            skipped["not captioned by every model"] += 1
            continue
        if not all(texts.values()):
            skipped["empty caption"] += 1
            continue
        path = image_file(record, root)
        if not path.is_file():
            skipped["image not found"] += 1
            continue
        items.append(Item(record["image_id"], record["dataset"], str(path), texts))
    if not items:
        names = ", ".join(str(ann) for ann, _ in sources)
        raise InputError(f"--ann {names}: no record can be rated (skipped: "
                         f"{_skip_text(skipped)}); check --images and that the predictions "
                         "name the records' image_id")
    return KitBuild(items, [name for name, _ in preds], {k: v for k, v in skipped.items() if v})


def _skip_text(skipped: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in skipped.items() if n) or "none"


def stratified_quota(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """How many of ``n`` each stratum gets: proportional shares, floors first, then the
    largest remainders (ties: the larger stratum, then the name)."""
    total = sum(sizes.values())
    if not 0 < n <= total:
        raise UsageError(f"--sample {n}: expected 1 to {total} (the items that can be rated)")
    exact = {name: n * size / total for name, size in sizes.items()}
    quota = {name: int(share) for name, share in exact.items()}
    rest = sorted(sizes, key=lambda name: (-(exact[name] - quota[name]), -sizes[name], name))
    for name in rest[: n - sum(quota.values())]:
        quota[name] += 1
    return quota


def sample_items(items: Sequence[Item], n: int, seed: int) -> list[Item]:
    """A seeded sample of ``n`` items, stratified by dataset (see ``stratified_quota``)."""
    strata: dict[str, list[Item]] = {}
    for item in items:
        strata.setdefault(item.dataset, []).append(item)
    quota = stratified_quota({name: len(group) for name, group in strata.items()}, n)
    chosen: list[Item] = []
    for name in sorted(strata):
        group = sorted(strata[name], key=lambda item: item.image_id)
        chosen.extend(random.Random(f"{seed}:{name}").sample(group, quota[name]))
    return chosen


def describe_build(build: KitBuild) -> str:
    """One line for the console: what was read, what was skipped and why."""
    datasets: dict[str, int] = {}
    for item in build.items:
        datasets[item.dataset] = datasets.get(item.dataset, 0) + 1
    spread = ", ".join(f"{name} {count}" for name, count in sorted(datasets.items()))
    line = (f"{len(build.items)} items from {len(build.models)} models ({spread}); skipped "
            f"{sum(build.skipped.values())} records ({_skip_text(build.skipped)})")
    return line

