"""Train/test splits the field uses: subject folds, the paper's split, seeded random splits.

- BP4D, DISFA, GFT: subject independent. ``fold=1..3`` is the common 3-fold protocol (test on
  part k, train on the other two); ``fold=None`` is the paper's split (BP4D 28/13 subjects:
  parts 1+2 / part 3; DISFA 24/3; GFT 78/18: the public test groups 008 010 019 022 028 030).
- RAF-AU, EmotioNet: seeded random, with the paper's test fraction applied to the number of
  images the user has.
- AffectNet, RAF-DB (compound and basic): official (set by the reader; RAF-DB by the
  ``train_``/``test_`` name prefix). FaceME: all for training. FEA-20K, FABA: as published
  (one file per split, set by the reader).
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError

BP4D_FOLDS: tuple[tuple[str, ...], ...] = (
    ("F001", "F002", "F008", "F009", "F010", "F016", "F018", "F023",
     "M001", "M004", "M007", "M008", "M012", "M014"),
    ("F003", "F005", "F011", "F013", "F020", "F022",
     "M002", "M005", "M010", "M011", "M013", "M016", "M017", "M018"),
    ("F004", "F006", "F007", "F012", "F014", "F015", "F017", "F019", "F021",
     "M003", "M006", "M009", "M015"),
)
DISFA_FOLDS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
# The paper (24 train / 3 test subjects) does not name its DISFA test subjects; this is our
# documented choice (the first three of fold part 3). Override with ``test_subjects``.
DISFA_PAPER_TEST: tuple[str, ...] = ("SN003", "SN029", "SN023")
BP4D_PAPER_TEST: tuple[str, ...] = BP4D_FOLDS[2]
GFT_PAPER_TEST_GROUPS: tuple[str, ...] = ("008", "010", "019", "022", "028", "030")

# Paper test fractions (test / (train + test)) for the seeded random splits.
RANDOM_TEST_FRACTION: dict[str, float] = {
    "rafau": 868 / (3733 + 868),
    "emotionet": 2117 / (19046 + 2117),
}
SUBJECT_DATASETS = ("bp4d", "disfa", "gft")


def gft_group(subject: str) -> str:
    """``028C`` -> ``028``."""
    return subject.rstrip("ABCabc") or subject


def gft_folds(subjects: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """GFT has no standard folds: groups (sorted) are dealt round-robin into 3 parts."""
    groups = sorted({gft_group(s) for s in subjects})
    parts: list[list[str]] = [[], [], []]
    for index, group in enumerate(groups):
        parts[index % 3].append(group)
    return tuple(tuple(s for s in sorted(set(subjects)) if gft_group(s) in part)
                 for part in parts)


def held_out_subjects(dataset: str, subjects: Iterable[str], fold: int | None) -> set[str]:
    """The test subjects of a subject-independent dataset for a fold or the paper split."""
    subjects = set(subjects)
    if fold is not None and fold not in (1, 2, 3):
        raise UsageError(f"fold must be 1, 2 or 3, got {fold}")
    if dataset == "bp4d":
        return set(BP4D_FOLDS[fold - 1] if fold else BP4D_PAPER_TEST)
    if dataset == "disfa":
        return set(DISFA_FOLDS[fold - 1] if fold else DISFA_PAPER_TEST)
    if dataset == "gft":
        if fold:
            return set(gft_folds(subjects)[fold - 1])
        return {s for s in subjects if gft_group(s) in GFT_PAPER_TEST_GROUPS}
    raise ValueError(f"{dataset} has no subject-independent split")


def assign_subject_split(records: list[Record], test_subjects: Iterable[str]) -> None:
    test = set(test_subjects)
    for record in records:
        record["split"] = "test" if record["subject"] in test else "train"


def random_split(records: Sequence[Record], test_fraction: float, seed: int) -> None:
    """Seeded: the same records and seed give the same split on any machine."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    order = sorted(range(len(records)), key=lambda i: records[i]["image_id"])
    random.Random(seed).shuffle(order)
    n_test = round(len(records) * test_fraction)
    test = set(order[:n_test])
    for index, record in enumerate(records):
        record["split"] = "test" if index in test else "train"


def apply_split(dataset: str, records: list[Record], *, fold: int | None = None, seed: int = 0,
                test_subjects: Iterable[str] | None = None) -> dict:
    """Set ``split`` on every record; returns a description for the report."""
    if dataset in SUBJECT_DATASETS:
        subjects = {r["subject"] for r in records}
        if test_subjects is not None:
            if fold is not None:
                raise UsageError("give either fold or test_subjects, not both")
            chosen = set(test_subjects)
            kind = "given test subjects"
        else:
            chosen = held_out_subjects(dataset, subjects, fold)
            kind = f"3-fold protocol, fold {fold}" if fold else "paper split"
        assign_subject_split(records, chosen)
        known = set().union(*BP4D_FOLDS) if dataset == "bp4d" else (
            set().union(*DISFA_FOLDS) if dataset == "disfa" else subjects)
        return {"kind": kind, "test_subjects": sorted(chosen & subjects),
                "train_subjects": sorted(subjects - chosen),
                "subjects_outside_protocol": sorted(subjects - known)}
    if fold is not None:
        raise UsageError(f"--fold applies to bp4d, disfa and gft, not {dataset}")
    if test_subjects is not None:
        raise UsageError(f"test subjects apply to bp4d, disfa and gft, not {dataset}")
    if dataset in RANDOM_TEST_FRACTION:
        fraction = RANDOM_TEST_FRACTION[dataset]
        random_split(records, fraction, seed)
        return {"kind": "seeded random", "seed": seed, "test_fraction": round(fraction, 6)}
    if dataset in ("affectnet", "rafdb"):
        return {"kind": "official"}
    if dataset in ("fea20k", "faba"):  # the published files: the reader sets the split
        return {"kind": "published files"}
    if dataset == "faceme":
        for record in records:
            record["split"] = "train"
        return {"kind": "all for training"}
    raise ValueError(f"unknown dataset {dataset!r}")
