"""FEA-20K (Facial-R1, AAAI 2026): facial-expression reasoning annotations, images not included.

Published: 17,737 training and 1,688 test items, on the model hub as QBiscuits/FEA-20K, in
Facial-R1's item keys (``readers.instruct``). Not confirmed (the file layout is not
published): the file names. Read here: ``<root>/train.jsonl`` and ``<root>/test.jsonl`` (or
``.json`` lists), or the files named by ``train_file`` / ``test_file``. The split is the
published one: the file an item comes from. Images are mapped from each item's ``dataset``
(its source) through ``image_roots``.
"""
from __future__ import annotations

from pathlib import Path

from lavis_ext.data.readers.common import SkipReport, require_dir
from lavis_ext.data.readers.instruct import read_splits
from lavis_ext.data.records import Record

NAME = "fea20k"
PUBLISHED_SIZES = {"train": 17737, "test": 1688}


def read(root: str | Path, report: SkipReport, *, image_roots: str | None = None,
         train_file: str | None = None, test_file: str | None = None,
         **_: object) -> list[Record]:
    return read_splits(require_dir(root, "FEA-20K root"), NAME, {"train": "train", "test": "test"}, report,
                       image_roots=image_roots,
                       given={"train": train_file, "test": test_file})
