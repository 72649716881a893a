"""Readers of the eight datasets' and two benchmarks' native files: ``read(root, report, **options) -> records``.

Readers know file formats only; splits and frame sampling are applied by ``prepare``.
"""
from __future__ import annotations

from types import ModuleType

from lavis_ext.data.readers import (affectnet, bp4d, disfa, emotionet, faba, faceme, fea20k,
                                    gft, rafau, rafdb)
from lavis_ext.data.readers.common import DatasetFormatError, SkipReport

READERS: dict[str, ModuleType] = {
    "bp4d": bp4d, "disfa": disfa, "gft": gft, "rafau": rafau, "emotionet": emotionet,
    "affectnet": affectnet, "rafdb": rafdb, "faceme": faceme,
    "fea20k": fea20k, "faba": faba,  # benchmarks whose images come from other datasets
}
DATASETS: tuple[str, ...] = tuple(READERS)
VIDEO_DATASETS: tuple[str, ...] = ("bp4d", "disfa", "gft")

__all__ = ["READERS", "DATASETS", "VIDEO_DATASETS", "DatasetFormatError", "SkipReport"]
