"""Where captioned records live: ``<workdir>/captions/<dataset>_<split>.json``.

One rule for every reader and writer of caption records, so that a hand-run step finds what
another step wrote: the pipeline (its ``workdir``), ``expblip import-captions`` (``--workdir``),
and the ``storage`` paths of the project YAMLs (``DEFAULT_WORKDIR``, the paper pipeline's
``workdir``; the tiny configs use the demo's). All models share one file per dataset and
split: the records hold every caption kind (``captions[kind]``) and each config picks its
kinds with ``caption_kinds``. (The field's benchmark configs that score against a
benchmark's own reference texts, FEA-20K's, read its prepared records instead.)
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from lavis_ext.errors import InputError

DEFAULT_WORKDIR = "runs/paper"
CAPTIONS_DIR = "captions"
_NAME = re.compile(r"^(?P<dataset>[a-z0-9]+(?:[_-][a-z0-9]+)*?)_(?P<split>train|val|test)\.json$")


def captions_path(workdir: str | Path, dataset: str, split: str) -> Path:
    """The records file of one dataset and split under a work folder."""
    if not dataset or "/" in dataset or "\\" in dataset:
        raise InputError(f"dataset: expected a plain dataset name, got {dataset!r}")
    if split not in ("train", "val", "test"):
        raise InputError(f"split: expected train, val or test, got {split!r}")
    return Path(workdir) / CAPTIONS_DIR / f"{dataset}_{split}.json"


def parse_captions_path(path: str | Path) -> tuple[str, str, str]:
    """``(workdir, dataset, split)`` of a path that follows the rule; ValueError otherwise."""
    posix = PurePosixPath(str(path).replace("\\", "/"))
    match = _NAME.match(posix.name)
    if posix.parent.name != CAPTIONS_DIR or match is None:
        raise InputError(f"{path}: expected <workdir>/{CAPTIONS_DIR}/<dataset>_<split>.json "
                         f"(split train, val or test)")
    return str(posix.parent.parent), match["dataset"], match["split"]
