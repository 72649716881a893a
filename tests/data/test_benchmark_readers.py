"""FEA-20K and FABA readers on fixtures in their native formats (tests/data/fixtures/, written
from the published descriptions): records in our schema, splits as published, images found
in other datasets' folders by source name, and every skipped item counted."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.readers import READERS, DatasetFormatError, SkipReport
from lavis_ext.data.readers.instruct import parse_image_roots, source_key
from lavis_ext.data.records import load_records, validate_record

FIXTURES = Path(__file__).parent / "fixtures"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by readers")
    return path


def read(name, root, **options):
    report = SkipReport(name)
    records = READERS[name].read(root, report, **options)
    for record in records:
        validate_record(record, record["image_id"])
    return {r["image_id"]: r for r in records}, report


@pytest.fixture
def source_images(tmp_path):
    raf, an = tmp_path / "raf", tmp_path / "an"
    for name in ("train_00001.jpg", "test_0001.jpg", "aligned/test_0002.jpg"):
        touch(raf / name)  # test_0002 sits deeper: found by its file name
    for name in ("Manually_Annotated_Images/1/abc.jpg", "1/img1.jpg", "3/img3.jpg"):
        touch(an / name)
    return {"raf": raf, "an": an}


def test_fea20k_native_jsonl_mapped_to_source_images(source_images):
    roots = f"RAF-DB={source_images['raf']},affectnet={source_images['an']}"
    records, report = read("fea20k", FIXTURES / "fea20k", image_roots=roots)
    assert sorted(records) == ["fea20k_fea_000001", "fea20k_fea_000002",
                               "fea20k_fea_100001", "fea20k_fea_100002"]
    happy = records["fea20k_fea_000001"]
    assert happy["split"] == "train" and happy["dataset"] == "fea20k"
    assert happy["image"] == str(source_images["raf"] / "train_00001.jpg")
    assert {au for au, v in happy["aus"].items() if v} == {"6", "12", "25"}
    assert len(happy["aus"]) == 27 and happy["emotions"] == ["happiness"]
    assert happy["caption"] == ["The cheeks are raised and the lip corners pulled up, lips "
                                "apart: a happy face."]
    assert happy["meta"]["source_dataset"] == "RAF-DB"
    assert happy["meta"]["question"] == ["Describe the facial actions and the emotion they "
                                         "suggest."]
    surprise = records["fea20k_fea_100001"]
    assert surprise["split"] == "test"
    assert {au for au, v in surprise["aus"].items() if v} == {"1", "2", "5", "26"}
    assert records["fea20k_fea_100002"]["image"].endswith("aligned/test_0002.jpg")
    assert records["fea20k_fea_100002"]["emotions"] == ["neutral"]
    assert report.rows_read == 9 and report.rows_skipped == 5
    assert dict(report.skipped) == {
        "unreadable AU": 1, "not valid JSON": 1, "duplicate id": 1,
        "image not found under the 'AffectNet' root": 1,
        "no image root for source 'EmotioNet'": 1}
    assert report.examples["not valid JSON"][0].endswith("train.jsonl:7: Expecting ',' "
                                                         "delimiter")
    assert report.notes["AUs outside the 27 FACS AUs (dropped)"] == 1  # AU45


def test_fea20k_without_image_roots_keeps_source_paths():
    records, report = read("fea20k", FIXTURES / "fea20k")
    assert len(records) == 6
    assert records["fea20k_fea_000002"]["image"] == \
        "affectnet/Manually_Annotated_Images/1/abc.jpg"
    assert any("images not resolved" in n for n in report.notes)


def test_faba_llava_conversations(source_images):
    records, report = read("faba", FIXTURES / "faba", image_roots=f"affectnet={source_images['an']}")
    assert sorted(records) == ["faba_faba_te_1", "faba_faba_tr_1"]
    angry = records["faba_faba_tr_1"]
    assert angry["split"] == "train" and angry["image"] == str(source_images["an"] / "1/img1.jpg")
    assert angry["caption"] == ["The brow lowerer (AU4) and lid tightener (AU7) are active."]
    assert {au for au, v in angry["aus"].items() if v} == {"4", "7"}
    assert angry["emotions"] == ["anger"] and angry["meta"]["source_dataset"] == "affectnet"
    assert angry["meta"]["question"] == ["Which facial action units are active?"]
    assert records["faba_faba_te_1"]["split"] == "test"
    assert dict(report.skipped) == {"no image field": 1,
                                    "no image root for source 'ferplus'": 1,
                                    "image not found under the 'affectnet' root": 1}


def test_faba_without_aus_codes_none():
    records, report = read("faba", FIXTURES / "faba")
    assert records["faba_faba_tr_2"]["aus"] == {}
    assert records["faba_faba_tr_2"]["emotions"] == ["happiness"]
    assert records["faba_faba_te_2"]["emotions"] == ["contempt"]
    assert report.notes["items without AU labels"] == 2


def test_missing_files_and_bad_roots(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"fea20k: none of train.jsonl/.json, "
                                                  r"test.jsonl/.json"):
        READERS["fea20k"].read(tmp_path, SkipReport("fea20k"))
    with pytest.raises(DatasetFormatError, match="test_file not found"):
        READERS["faba"].read(tmp_path, SkipReport("faba"), test_file="bench.json")
    with pytest.raises(DatasetFormatError, match="expected NAME=FOLDER"):
        parse_image_roots("rafdb")
    assert source_key("RAF-DB") == source_key("raf_db") == "rafdb"
    # one split alone is read, the missing one noted
    shutil.copy(FIXTURES / "fea20k" / "test.jsonl", tmp_path / "test.jsonl")
    report = SkipReport("fea20k")
    assert {r["split"] for r in READERS["fea20k"].read(tmp_path, report)} == {"test"}
    assert report.notes["no train file (train.jsonl or .json)"] == 1


def test_prepare_writes_the_published_splits(tmp_path, source_images):
    roots = f"rafdb={source_images['raf']},affectnet={source_images['an']}"
    summary = prepare_dataset("fea20k", FIXTURES / "fea20k", tmp_path / "out",
                              image_roots=roots)
    assert summary["split"] == {"kind": "published files"}
    assert summary["records_written"] == {"train": 2, "test": 2}
    assert [r["image_id"] for r in load_records(tmp_path / "out" / "test.json")] == \
        ["fea20k_fea_100001", "fea20k_fea_100002"]
