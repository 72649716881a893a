"""Subject folds, seeded random splits and video frame sampling."""
from __future__ import annotations

import pytest

from lavis_ext.data.sampling import sample_frames
from lavis_ext.data.splits import (BP4D_FOLDS, DISFA_FOLDS, apply_split, gft_folds,
                                   random_split, held_out_subjects)


def frame(seq: str, number: int, au12: int | None) -> dict:
    return {"image_id": f"{seq}_{number}", "subject": seq, "sequence": seq, "frame": number,
            "aus": {"12": au12}, "split": "train"}


def test_sampling_keeps_every_nth_and_label_changes():
    labels = [0] * 12 + [1] + [0] * 7  # a one-frame AU at position 12
    records = [frame("S1", 100 + i, v) for i, v in enumerate(labels)]
    records.reverse()  # order of frames must not matter
    kept = sorted(r["frame"] for r in sample_frames(records, 10))
    assert kept == [100, 110, 112, 113]  # 0, 10, the change to 1 and the change back
    assert len(sample_frames(records, 1)) == 20
    two = records + [frame("S2", 5, 0), frame("S2", 6, 0)]
    assert sum(r["sequence"] == "S2" for r in sample_frames(two, 10)) == 1
    with pytest.raises(ValueError):
        sample_frames(records, 0)


def test_sampling_not_coded_is_not_a_label_change():
    # BP4D codes "not coded" as 9 (null in records): 0 -> 9 -> 0 and 1 -> 9 -> 1 change
    # nothing; 0 -> 9 -> 1 is a real change (from the last coded value), kept once.
    labels = ([0] * 5 + [None] * 3 + [0] * 7 + [None] + [1] * 4 + [None] * 2 + [1] * 3
              + [0] * 5 + [None] * 4 + [0] * 6)
    records = [frame("S1", 200 + i, v) for i, v in enumerate(labels)]
    kept = sorted(r["frame"] - 200 for r in sample_frames(records, 10))
    changes = [16, 25]  # 0 (9) -> 1 at 16, 1 -> 0 at 25; nothing at the 9s
    assert kept == sorted(set(range(0, len(labels), 10)) | set(changes))
    # a sequence that is all 9 in one AU but changes in another still counts the other
    mixed = [dict(frame("S2", i, None), aus={"12": None, "6": int(i == 3)}) for i in range(8)]
    assert sorted(r["frame"] for r in sample_frames(mixed, 10)) == [0, 3, 4]


def test_bp4d_disfa_folds_partition_subjects():
    bp4d = [s for part in BP4D_FOLDS for s in part]
    assert len(bp4d) == len(set(bp4d)) == 41
    disfa = [s for part in DISFA_FOLDS for s in part]
    assert len(disfa) == len(set(disfa)) == 27
    assert len(held_out_subjects("bp4d", bp4d, None)) == 13  # paper: 28 train / 13 test
    assert held_out_subjects("bp4d", bp4d, 1) == set(BP4D_FOLDS[0])
    assert len(held_out_subjects("disfa", disfa, None)) == 3  # paper: 24 / 3


def test_gft_splits():
    subjects = [f"{g:03d}{p}" for g in range(1, 33) for p in "ABC"]
    paper = held_out_subjects("gft", subjects, None)
    assert len(paper) == 18 and "028C" in paper
    folds = gft_folds(subjects)
    assert sum(len(f) for f in folds) == 96 and not set(folds[0]) & set(folds[1])
    assert {s[:3] for s in folds[0]}.isdisjoint({s[:3] for s in folds[2]})


def test_random_split_is_seeded_and_sized():
    records = [{"image_id": f"{i:04d}", "split": "train"} for i in range(4601)]
    info = apply_split("rafau", records, seed=1)
    assert info["kind"] == "seeded random"
    assert sum(r["split"] == "test" for r in records) == 868  # the paper's 3,733 / 868
    first = [r["split"] for r in records]
    random_split(records, info["test_fraction"], 1)
    assert [r["split"] for r in records] == first
    random_split(records, info["test_fraction"], 2)
    assert [r["split"] for r in records] != first
    emotionet = [{"image_id": str(i), "split": "train"} for i in range(21163)]
    apply_split("emotionet", emotionet, seed=0)
    assert sum(r["split"] == "test" for r in emotionet) == 2117


def test_rafdb_compound_split_is_the_release_partition(tmp_path):
    """The label file's train_/test_ prefixes decide, as in the release (3,162 / 792 of 3,954
    in Table 1); no seed changes it."""
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.records import load_records

    labels = tmp_path / "raw" / "compound" / "EmoLabel"
    labels.mkdir(parents=True)
    lines = [f"train_{i:04d}.jpg {1 + i % 11}" for i in range(1, 3163)]
    lines += [f"test_{i:04d}.jpg {1 + i % 11}" for i in range(1, 793)]
    lines.insert(100, "extra_0001.jpg 3")  # neither prefix: counted, not guessed
    (labels / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    tests = []
    for seed in (0, 1):
        out = tmp_path / f"out{seed}"
        report = prepare_dataset("rafdb", tmp_path / "raw", out, seed=seed)
        assert report["split"] == {"kind": "official"}
        assert report["records_written"] == {"train": 3162, "test": 792}
        assert report["skipped"] == {"name has no train_/test_ prefix": 1}
        test = load_records(out / "test.json")
        assert all(r["image_id"].startswith("compound_test_") for r in test)
        assert all(r["image_id"].startswith("compound_train_")
                   for r in load_records(out / "train.json"))
        tests.append([r["image_id"] for r in test])
    assert tests[0] == tests[1]
