"""make-synthetic -> prepare round trips for all eight datasets, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lavis_ext.cli import main
from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.readers import DatasetFormatError
from lavis_ext.data.records import load_records
from lavis_ext.data.synthetic import make_synthetic

CASES = [("bp4d", None), ("disfa", None), ("gft", None), ("rafau", None), ("emotionet", None),
         ("emotionet", "csv"), ("affectnet", "csv"), ("affectnet", "npy"),
         ("rafdb", "compound"), ("rafdb", "basic"), ("faceme", None)]
N = 36


def load_all(out: Path) -> list[dict]:
    return [r for split in ("train", "val", "test") if (out / f"{split}.json").exists()
            for r in load_records(out / f"{split}.json")]


@pytest.mark.parametrize("dataset,variant", CASES)
def test_round_trip_exact(tmp_path, dataset, variant):
    root, out = tmp_path / "raw", tmp_path / "prepared"
    manifest = make_synthetic(dataset, root, N, seed=3, image_size=48, variant=variant)
    options = {"release": variant} if dataset == "affectnet" else \
        {"subset": variant} if dataset == "rafdb" else {}
    sample_every = 1 if dataset in ("bp4d", "disfa", "gft") else None
    report = prepare_dataset(dataset, root, out, sample_every=sample_every, seed=5, **options)
    records = load_all(out)
    got = {r["image_id"]: r for r in records}
    assert len(got) == len(records) == len(manifest["labels"])
    assert report["rows_read"] == manifest["rows_read"]
    assert report["skipped"] == manifest["skipped"]
    for image_id, expected in manifest["labels"].items():
        record = got[image_id]
        assert record["aus"] == expected["aus"], image_id
        assert record["emotions"] == expected["emotions"], image_id
        if "au_intensity" in expected:
            assert record["au_intensity"] == expected["au_intensity"]
        if "split" in expected:  # official splits
            assert record["split"] == expected["split"]
        assert (root / record["image"]).is_file(), record["image"]
    assert report["records_written"]["train"] + report["records_written"].get("test", 0) == \
        len(manifest["labels"])
    assert json.loads((out / "report.json").read_text())["rows_read"] == report["rows_read"]


def test_report_distribution_and_sampling(tmp_path):
    make_synthetic("bp4d", tmp_path / "raw", 120, seed=1, image_size=40)
    report = prepare_dataset("bp4d", tmp_path / "raw", tmp_path / "out")
    sampling = report["sampling"]["train"]
    assert sampling["every"] == 10 and sampling["after"] < sampling["before"]
    assert "test" not in report["sampling"]  # BP4D test is not sampled
    train = load_records(tmp_path / "out" / "train.json")
    assert len(train) == sampling["after"]
    dist = report["label_distribution"]["train"]
    assert dist["images"] == len(train)
    assert dist["aus"]["12"]["present"] == sum(r["aus"]["12"] == 1 for r in train)
    assert report["split"]["kind"] == "paper split"
    assert {r["subject"] for r in load_records(tmp_path / "out" / "test.json")} <= \
        {"M009", "F004"}


def test_fold_and_random_splits(tmp_path):
    make_synthetic("disfa", tmp_path / "disfa", 30, seed=0, image_size=40)
    report = prepare_dataset("disfa", tmp_path / "disfa", tmp_path / "d1", fold=2, sample_every=1)
    assert report["split"]["test_subjects"] == ["SN013"]
    make_synthetic("rafau", tmp_path / "rafau", 50, seed=0, image_size=40)
    a = prepare_dataset("rafau", tmp_path / "rafau", tmp_path / "r1", seed=7)
    b = prepare_dataset("rafau", tmp_path / "rafau", tmp_path / "r2", seed=7)
    assert a["records_written"] == b["records_written"] == {"train": 41, "test": 9}
    assert load_records(tmp_path / "r1" / "test.json") == \
        load_records(tmp_path / "r2" / "test.json")
    with pytest.raises(ValueError, match="--fold applies"):
        prepare_dataset("rafau", tmp_path / "rafau", tmp_path / "r3", fold=1)
    with pytest.raises(ValueError, match="--sample-every applies"):
        prepare_dataset("rafau", tmp_path / "rafau", tmp_path / "r3", sample_every=5)


def test_check_images_counts_missing(tmp_path):
    make_synthetic("rafdb", tmp_path / "raw", 10, seed=0, image_size=40)
    victim = next((tmp_path / "raw" / "compound" / "Image" / "aligned").iterdir())
    victim.unlink()
    report = prepare_dataset("rafdb", tmp_path / "raw", tmp_path / "out", check_images=True)
    assert report["skipped"] == {"image file missing": 1}
    assert sum(report["records_written"].values()) == 9


def test_cli_prepare_and_errors(tmp_path, capsys):
    assert main(["make-synthetic", "gft", "--out", str(tmp_path / "raw"), "--n", "12",
                 "--seed", "2", "--image-size", "40"]) == 0
    assert main(["prepare", "gft", "--root", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "out"), "--sample-every", "1"]) == 0
    text = capsys.readouterr().out
    assert "skipped 5: no AU coded" in text and "report:" in text
    assert (tmp_path / "out" / "train.json").is_file()
    assert main(["prepare", "bp4d", "--root", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "o2")]) == 2
    assert "expblip prepare: error: bp4d: --root directory not found" in capsys.readouterr().err
    assert main(["prepare", "bp4d", "--root", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "o2")]) == 2
    assert "AUCoding/AU_OCC" in capsys.readouterr().err
    assert main(["prepare", "gft", "--root", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "o4"), "--aus", "1,x"]) == 2
    assert "--aus: AU 'x' is not one of" in capsys.readouterr().err
    with pytest.raises(DatasetFormatError):
        prepare_dataset("faceme", tmp_path / "raw", tmp_path / "o3")
