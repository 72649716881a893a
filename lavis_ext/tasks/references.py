"""Find the ground-truth records (references and labels) behind a LAVIS dataset object.

Evaluation needs, for every ``image_id`` a dataset yields, the record with its reference
captions, AU labels and emotions. Datasets expose them in different ways; in order:
``dataset.records`` (a list of records), ``dataset.annotation`` (LAVIS's BaseDataset list,
grouped by image_id when it holds one item per caption), or the annotation file(s) named in
the dataset config (``build_info.annotations.<split>.storage``), which tasks remember while
building the datasets. ``ConcatDataset`` parts are merged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from torch.utils.data import ConcatDataset

from lavis_ext.data.records import Record, read_record_list
from lavis_ext.errors import InputError


def _merge(items: Iterable[Mapping[str, Any]], where: str) -> dict[str, Record]:
    merged: dict[str, Record] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "image_id" not in item:
            raise InputError(f"{where}[{i}]: expected an object with 'image_id'")
        image_id = str(item["image_id"])
        captions = item.get("caption")
        captions = [captions] if isinstance(captions, str) else list(captions or [])
        if image_id not in merged:
            record = dict(item)
            record["image_id"] = image_id
            record["caption"] = captions
            record.setdefault("aus", {})
            record.setdefault("emotions", [])
            merged[image_id] = record
        else:
            known = merged[image_id]["caption"]
            known.extend(c for c in captions if c not in known)
    return merged


def records_from_files(paths: Iterable[str | Path]) -> dict[str, Record]:
    merged: dict[str, Record] = {}
    for path in paths:
        data = read_record_list(path)
        for image_id, record in _merge(data, str(path)).items():
            merged.setdefault(image_id, record)
    return merged


def records_for_dataset(dataset: Any, annotation_files: Mapping[int, list[str]] | None = None
                        ) -> dict[str, Record]:
    """Records by image_id for a dataset; ``annotation_files`` maps ``id(dataset)`` to paths."""
    if isinstance(dataset, ConcatDataset):
        merged: dict[str, Record] = {}
        for part in dataset.datasets:
            for image_id, record in records_for_dataset(part, annotation_files).items():
                merged.setdefault(image_id, record)
        return merged
    records = getattr(dataset, "records", None)
    if isinstance(records, list) and records:
        return _merge(records, f"{type(dataset).__name__}.records")
    annotation = getattr(dataset, "annotation", None)
    if isinstance(annotation, list) and annotation and isinstance(annotation[0], Mapping):
        return _merge(annotation, f"{type(dataset).__name__}.annotation")
    files = (annotation_files or {}).get(id(dataset))
    if files:
        return records_from_files(files)
    raise InputError(f"cannot find the ground-truth records of {type(dataset).__name__}: give "
                     f"it a 'records' or 'annotation' list of records, or an annotation file in "
                     f"the dataset config (build_info.annotations.<split>.storage)")


def annotation_storage(dataset_config: Any, split: str) -> list[str]:
    """``build_info.annotations.<split>.storage`` as a list of paths (empty when absent)."""
    try:
        storage = dataset_config.build_info.annotations[split].storage
    except (AttributeError, KeyError, TypeError):
        return []
    if storage is None:
        return []
    paths = [storage] if isinstance(storage, str) else [str(s) for s in storage]
    return [_resolve(p) for p in paths]


def _resolve(path: str) -> str:
    """The dataset builders' rule (``lavis_ext.io.resolve_path``): relative to the working
    directory, so the references are read from the very files the datasets were built from."""
    from lavis_ext.io import resolve_path

    return str(resolve_path(path))
