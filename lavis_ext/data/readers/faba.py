"""FABA-Instruct and FABA-Bench (EmoLA, ECCV 2024): AU and emotion description, images from
other datasets.

Published: FABA-Instruct is the instruction (training) set, FABA-Bench its test benchmark
(with the REGE metric). Not confirmed (the layout is not published and the data link is
reported dead): the file names and the item keys. Read here: LLaVA conversation items (EmoLA
builds on LLaVA) or Facial-R1's keys (Facial-R1 reports on FABA-Instruct), see
``readers.instruct``, from ``<root>/FABA-Instruct.json`` (train) and ``<root>/FABA-Bench.json``
(test), each as ``.jsonl`` or ``.json``, or the files named by ``train_file`` / ``test_file``. An
item without ``dataset`` takes its source from the first folder of its ``image`` path.
"""
from __future__ import annotations

from pathlib import Path

from lavis_ext.data.readers.common import SkipReport, require_dir
from lavis_ext.data.readers.instruct import read_splits
from lavis_ext.data.records import Record

NAME = "faba"
SPLIT_FILES = {"train": "FABA-Instruct", "test": "FABA-Bench"}


def read(root: str | Path, report: SkipReport, *, image_roots: str | None = None,
         train_file: str | None = None, test_file: str | None = None,
         **_: object) -> list[Record]:
    return read_splits(require_dir(root, "FABA root"), NAME, SPLIT_FILES, report,
                       image_roots=image_roots,
                       given={"train": train_file, "test": test_file})
