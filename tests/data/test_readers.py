"""Each reader on small hand-written fixtures: every wart, bad rows, malformed files."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lavis_ext.data.readers import READERS, DatasetFormatError, SkipReport
from lavis_ext.data.readers.rafau import parse_au_string


def read(name: str, root: Path, **options):
    report = SkipReport(name)
    records = READERS[name].read(root, report, **options)
    return {r["image_id"]: r for r in records}, report


def write_csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


# --- BP4D --------------------------------------------------------------------------------
def bp4d_row(frame: int, values: dict[int, int], default: int = 9) -> list[str]:
    return [str(frame)] + [str(values.get(au, default)) for au in range(1, 100)]


def test_bp4d_integer_header_9_and_padding(tmp_path):
    labels = tmp_path / "AUCoding" / "AU_OCC"
    protocol = {1: 0, 2: 0, 4: 1, 6: 0, 7: 0, 10: 0, 12: 1, 14: 0, 15: 0, 17: 0, 23: 0, 24: 0}
    write_csv(labels / "F001_T1.csv", [[str(i) for i in range(100)],
                                       bp4d_row(2440, protocol),
                                       bp4d_row(2441, {**protocol, 12: 9}),
                                       bp4d_row(2442, {}),  # nothing coded
                                       bp4d_row(2443, {**protocol, 4: 2})])
    write_csv(labels / "M009_T2.csv", [["Frame"] + [f"AU{a}" for a in sorted(protocol)],
                                       ["7"] + ["1"] * 12])
    (tmp_path / "Sequences_2D+3D" / "M009" / "T2").mkdir(parents=True)
    (tmp_path / "Sequences_2D+3D" / "M009" / "T2" / "007.jpg").write_bytes(b"")
    records, report = read("bp4d", tmp_path)
    assert sorted(records) == ["F001_T1_2440", "F001_T1_2441", "M009_T2_7"]
    first = records["F001_T1_2440"]
    assert first["aus"]["4"] == 1 and first["aus"]["1"] == 0 and len(first["aus"]) == 12
    assert first["image"] == "Sequences_2D+3D/F001/T1/2440.jpg"
    assert first["subject"] == "F001" and first["sequence"] == "F001_T1"
    assert records["F001_T1_2441"]["aus"]["12"] is None  # 9 = not coded, distinct from 0
    assert records["M009_T2_7"]["image"] == "Sequences_2D+3D/M009/T2/007.jpg"  # 3 digits
    assert report.rows_read == 5
    assert report.skipped == {"no AU coded (all 9)": 1, "value out of range": 1}
    assert report.examples["value out of range"][0].startswith(str(labels / "F001_T1.csv") + ":5")


def test_bp4d_named_header_with_zero_and_all_aus(tmp_path):
    labels = tmp_path / "AUCoding" / "AU_OCC"
    header = ["0"] + [str(a) for a in (1, 2, 4, 5, 6, 7, 10, 12, 14, 15, 17, 23, 24, 43)]
    write_csv(labels / "F002_T3.csv", [header, ["10"] + ["0"] * 12 + ["1", "9"]])
    records, _ = read("bp4d", tmp_path, aus="all")
    assert records["F002_T3_10"]["aus"]["24"] == 1 and records["F002_T3_10"]["aus"]["43"] is None
    assert "5" in records["F002_T3_10"]["aus"]


def test_bp4d_bad_rows_and_files(tmp_path):
    labels = tmp_path / "AUCoding" / "AU_OCC"
    write_csv(labels / "F001_T1.csv", [[str(i) for i in range(100)], ["1", "0"],
                                       ["x"] + ["0"] * 99])
    records, report = read("bp4d", tmp_path)
    assert records == {}
    assert report.skipped == {"wrong number of columns": 1, "not an integer": 1}
    write_csv(labels / "F001_T1.csv", [["frame", "AU1", "smile"]])
    with pytest.raises(DatasetFormatError, match=r"F001_T1.csv:1: header column 3"):
        read("bp4d", tmp_path)
    with pytest.raises(DatasetFormatError, match="directory not found"):
        read("bp4d", tmp_path / "nowhere")


def test_bp4d_intensity_files_fill_au_intensity(tmp_path):
    labels = tmp_path / "AUCoding" / "AU_OCC"
    protocol = {1: 0, 2: 0, 4: 0, 6: 1, 7: 0, 10: 0, 12: 1, 14: 0, 15: 0, 17: 0, 23: 0, 24: 0}
    write_csv(labels / "F001_T1.csv", [[str(i) for i in range(100)],
                                       bp4d_row(2440, protocol), bp4d_row(2441, protocol),
                                       bp4d_row(2442, protocol)])
    codes = tmp_path / "AU-Intensity-Codes3.0"
    # native layout: one folder per AU, no header, frame,intensity; 9 = not coded
    write_csv(codes / "AU06" / "F001_T1_AU06.csv", [["2440", "3"], ["2441", "9"],
                                                    ["2442", "C"]])
    write_csv(codes / "AU12" / "F001_T1_AU12.csv", [["2440", "5"], ["2441", "7"],
                                                    ["2440", "1"], ["x", "2"]])
    (codes / "AU06" / "readme.txt").write_text("notes")
    records, report = read("bp4d", tmp_path)
    assert records["F001_T1_2440"]["au_intensity"] == {"6": 3, "12": 5}
    assert records["F001_T1_2441"]["au_intensity"] == {"6": None, "12": None}  # 9; bad 7
    assert records["F001_T1_2442"]["au_intensity"] == {"6": 3, "12": None}  # letter C; no line
    assert report.skipped == {"intensity: value out of range": 1,
                              "intensity: duplicate frame": 1,
                              "intensity: frame is not an integer": 1}
    assert report.examples["intensity: value out of range"][0].startswith(
        str(codes / "AU12" / "F001_T1_AU12.csv") + ":2")
    assert any("names" not in n and "ignored" in n for n in report.notes)
    # AUs outside the kept set carry no intensity; no folder at all: no field, noted
    only_brows, _ = read("bp4d", tmp_path, aus=[1, 2, 4])
    assert "au_intensity" not in only_brows["F001_T1_2440"]
    import shutil
    shutil.rmtree(codes)
    plain, report = read("bp4d", tmp_path)
    assert "au_intensity" not in plain["F001_T1_2440"]
    assert any("no AU-Intensity-Codes3.0" in n for n in report.notes)


# --- DISFA -------------------------------------------------------------------------------
def write_disfa(root: Path, subject: str, values: dict[int, list[int]]) -> None:
    folder = root / "ActionUnit_Labels" / subject
    folder.mkdir(parents=True, exist_ok=True)
    for au, series in values.items():
        text = "\n".join(f"{i + 1},{v}" for i, v in enumerate(series))
        (folder / f"{subject}_au{au}.txt").write_text(text + "\n")


def test_disfa_threshold_intensity_and_missing_line(tmp_path):
    aus = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
    series = {au: [0, 1, 2, 5] for au in aus}
    series[26] = [0, 3, 1]  # one line fewer: frame 4 has no AU 26 label
    write_disfa(tmp_path, "SN001", series)
    records, report = read("disfa", tmp_path)
    assert sorted(records) == ["SN001_1", "SN001_2", "SN001_3", "SN001_4"]
    assert records["SN001_2"]["aus"]["1"] == 0 and records["SN001_3"]["aus"]["1"] == 1
    assert records["SN001_2"]["au_intensity"]["1"] == 1
    assert records["SN001_4"]["aus"]["26"] is None and records["SN001_4"]["aus"]["1"] == 1
    assert records["SN001_1"]["image"] == "Frames_LeftCamera/SN001/00001.jpg"
    assert report.rows_read == 11 * 4 + 3 and report.rows_skipped == 0
    low, _ = read("disfa", tmp_path, threshold=1)
    assert low["SN001_2"]["aus"]["1"] == 1
    custom, _ = read("disfa", tmp_path, frame_pattern="frames/{subject}_{frame:04d}.png")
    assert custom["SN001_3"]["image"] == "frames/SN001_0003.png"


def test_disfa_bad_lines_and_missing_file(tmp_path):
    aus = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
    write_disfa(tmp_path, "SN002", {au: [0, 0] for au in aus})
    path = tmp_path / "ActionUnit_Labels" / "SN002" / "SN002_au1.txt"
    path.write_text("1,0\n2,7\n3;1\n")
    _, report = read("disfa", tmp_path)
    assert report.skipped == {"value out of range": 1, "wrong number of fields": 1}
    assert report.examples["value out of range"][0].startswith(f"{path}:2")
    path.unlink()
    with pytest.raises(DatasetFormatError, match=r"no label file for AU\(s\) \[1\]"):
        read("disfa", tmp_path)


# --- GFT ---------------------------------------------------------------------------------
def test_gft_csv(tmp_path):
    header = ["image"] + [f"au{a}" for a in (1, 2, 4, 6, 10, 12, 14, 15, 23, 24)]
    write_csv(tmp_path / "gft_labels.csv", [
        header, ["frames/028C/1.jpg"] + ["0"] * 9 + ["1"],
        ["frames/028C/2.jpg"] + ["9"] + [""] + ["1"] * 8,
        ["frames/028C/3.jpg"] + [""] * 10, ["frames/001A/x.jpg"] + ["0"] * 10,
        ["frames/001A/4.jpg"] + ["2"] + ["0"] * 9])
    records, report = read("gft", tmp_path)
    assert sorted(records) == ["028C_1", "028C_2"]
    assert records["028C_1"]["subject"] == "028C" and records["028C_1"]["aus"]["24"] == 1
    assert records["028C_2"]["aus"]["1"] is None and records["028C_2"]["aus"]["2"] is None
    assert report.skipped == {"no AU coded": 1, "frame number is not an integer": 1,
                              "value out of range": 1}
    with pytest.raises(DatasetFormatError, match="file not found"):
        read("gft", tmp_path, labels_file="other.csv")


# --- RAF-AU ------------------------------------------------------------------------------
def test_rafau_tokens():
    assert parse_au_string("17+B22+T24") == ({17, 22, 24}, [])
    assert parse_au_string("L12+25A") == ({12, 25}, [])
    assert parse_au_string("null") == (set(), [])
    assert parse_au_string("1+?") == ({1}, ["?"])


def test_rafau_file_warts(tmp_path):
    (tmp_path / "RAFAU_label.txt").write_text(
        "0001.jpg 1+2+L12\n0002.jpg null   \n0003.jpg 17+B22+T24 1\n0004.jpg 4+62\n"
        "0005.jpg\n0006.jpg 1+x?\n")
    records, report = read("rafau", tmp_path)
    assert sorted(records) == ["0001", "0002", "0003", "0004"]
    assert records["0001"]["aus"]["12"] == 1 and records["0001"]["aus"]["4"] == 0
    assert len(records["0001"]["aus"]) == 27
    assert sum(records["0002"]["aus"].values()) == 0
    assert {a for a, v in records["0003"]["aus"].items() if v} == {"17", "22", "24"}
    assert {a for a, v in records["0004"]["aus"].items() if v} == {"4"}
    assert records["0001"]["image"] == "aligned/0001_aligned.jpg"
    assert report.skipped == {"no AU field": 1, "unreadable AU token": 1}
    assert report.notes == {"lines with extra fields (ignored)": 1,
                            "AU tokens outside the 27 FACS AUs (dropped)": 1}


# --- EmotioNet ---------------------------------------------------------------------------
EMOTIONET_ROWS = [
    ["URL", "URL orig"] + [f"'AU {k}'" for k in range(1, 61)],
    ["'http://x.org/a/N_0000000001_00001.jpg'", "http://o.org/1"] + ["0"] * 60,
    ["'http://x.org/a/N_0000000002_00001.jpg", "http://o.org/2"] + ["1"] + ["999"] * 59,
    ["http://x.org/a/N_0000000003_00001.jpg", "o"] + ["999"] * 60,
    ["http://x.org/a/N_0000000004_00001.jpg", "o"] + ["5"] * 60,
]


def test_emotionet_csv_quotes_and_999(tmp_path):
    write_csv(tmp_path / "EmotioNet_FACS_aws_2020_24600.csv", EMOTIONET_ROWS)
    records, report = read("emotionet", tmp_path)
    assert sorted(records) == ["N_0000000001_00001", "N_0000000002_00001"]
    second = records["N_0000000002_00001"]
    assert second["aus"]["1"] == 1 and second["aus"]["2"] is None and len(second["aus"]) == 11
    assert second["image"] == "images/N_0000000002_00001.jpg"
    assert second["meta"]["url"] == "http://x.org/a/N_0000000002_00001.jpg"
    assert report.skipped == {"no AU annotated (all 999)": 1, "value out of range": 1}


def test_emotionet_xlsx_and_challenge_list(tmp_path):
    import openpyxl  # a declared dependency (setup.py): missing means a broken install
    book = openpyxl.Workbook()
    for row in EMOTIONET_ROWS:
        book.active.append([int(c) if c.isdigit() else c for c in row])
    book.save(tmp_path / "EmotioNet_FACS_aws_2020_24600.xlsx")
    records, _ = read("emotionet", tmp_path)
    assert sorted(records) == ["N_0000000001_00001", "N_0000000002_00001"]
    assert records["N_0000000002_00001"]["aus"]["1"] == 1
    other = tmp_path / "challenge"
    other.mkdir()
    (other / "dataFile_1001.txt").write_text(
        "\t".join(["http://x/N_1.jpg", "http://y"] + ["1"] * 2 + ["0"] * 58) + "\n")
    records, _ = read("emotionet", other)
    assert records["N_1"]["aus"]["2"] == 1 and records["N_1"]["aus"]["4"] == 0


def test_emotionet_malformed(tmp_path):
    (tmp_path / "broken.xlsx").write_text("not a workbook")
    with pytest.raises(DatasetFormatError, match="not a readable .xlsx"):
        read("emotionet", tmp_path)
    write_csv(tmp_path / "x.csv", [["Name", "URL orig", "'AU 1'"]])
    with pytest.raises(DatasetFormatError, match="first column must be 'URL'"):
        read("emotionet", tmp_path, labels_file="x.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="no label file"):
        read("emotionet", empty)


# --- AffectNet ---------------------------------------------------------------------------
def test_affectnet_csv_codes(tmp_path):
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
              "facial_landmarks", "expression", "valence", "arousal"]
    folder = tmp_path / "Manually_Annotated_file_lists"
    write_csv(folder / "training.csv", [header] + [
        [f"1/img{code}.jpg", "0", "0", "9", "9", "1.0;2.0", str(code), "0.5", "-2"]
        for code in range(11)] + [["1/bad.jpg", "0", "0", "9", "9", "", "happy", "0", "0"]])
    write_csv(folder / "validation.csv", [header, ["2/v.jpg", "0", "0", "9", "9", "", "7",
                                                   "0.1", "0.2"]])
    records, report = read("affectnet", tmp_path)
    assert len(records) == 9
    assert records["1_img1"]["emotions"] == ["happiness"] and records["1_img1"]["split"] == "train"
    assert records["2_v"]["emotions"] == ["contempt"] and records["2_v"]["split"] == "test"
    assert records["1_img1"]["image"] == "Manually_Annotated_Images/1/img1.jpg"
    assert report.skipped == {"not an emotion (8 none)": 1, "not an emotion (9 uncertain)": 1,
                              "not an emotion (10 no-face)": 1, "not an integer": 1}


def test_affectnet_face_box_and_5_points_from_its_68(tmp_path):
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
              "facial_landmarks", "expression", "valence", "arousal"]
    points = [(float(i), float(100 + i)) for i in range(68)]  # point i at (i, 100 + i)
    landmarks = ";".join(f"{v}" for p in points for v in p)
    folder = tmp_path / "Manually_Annotated_file_lists"
    write_csv(folder / "training.csv", [
        header, ["1/a.jpg", "10", "20", "30", "40", landmarks, "1", "0", "0"],
        ["1/b.jpg", "10", "20", "30", "40", "1;2", "1", "0", "0"],
        ["1/c.jpg", "10", "20", "0", "40", landmarks, "1", "0", "0"]])
    write_csv(folder / "validation.csv", [header])
    records, report = read("affectnet", tmp_path)
    a, b, c = records["1_a"], records["1_b"], records["1_c"]
    assert a["face_box"] == [10.0, 20.0, 30.0, 40.0]
    # eye centres: means of 36-41 and 42-47; nose tip 30; mouth corners 48, 54
    assert a["face_landmarks"] == [[38.5, 138.5], [44.5, 144.5], [30.0, 130.0],
                                   [48.0, 148.0], [54.0, 154.0]]
    assert b["face_box"] == [10.0, 20.0, 30.0, 40.0] and b["face_landmarks"] is None
    assert "face_box" not in c and "face_landmarks" not in c  # zero width: the detector runs
    assert report.notes == {"rows without 68 usable landmarks (aligned from the face box)": 1,
                            "rows without a usable face box (the detector finds the face)": 1}
    for split in ("train_set", "val_set"):
        (tmp_path / "npy" / split / "annotations").mkdir(parents=True)
    annotations = tmp_path / "npy" / "train_set" / "annotations"
    np.save(annotations / "5_exp.npy", np.array(1))
    np.save(annotations / "5_lnd.npy", np.array([v for p in points for v in p]))
    np.save(annotations / "6_exp.npy", np.array(2))
    np.save(annotations / "6_lnd.npy", np.array([1.0, 2.0]))
    records, report = read("affectnet", tmp_path / "npy")
    assert records["train_5"]["face_box"] == [0.0, 100.0, 67.0, 67.0]  # the points' extent
    assert records["train_5"]["face_landmarks"] == a["face_landmarks"]
    assert "face_box" not in records["train_6"] and "face_landmarks" not in records["train_6"]
    assert sum(report.notes.values()) == 1


def test_affectnet_npy_string_scalars(tmp_path):
    for folder, code in (("train_set", np.array("3")), ("val_set", np.array(6))):
        annotations = tmp_path / folder / "annotations"
        annotations.mkdir(parents=True)
        np.save(annotations / "17_exp.npy", code)
        np.save(annotations / "17_val.npy", np.array("0.25"))
    records, _ = read("affectnet", tmp_path)
    assert records["train_17"]["emotions"] == ["surprise"]
    assert records["train_17"]["meta"]["valence"] == 0.25
    assert records["test_17"]["emotions"] == ["anger"] and records["test_17"]["split"] == "test"
    assert records["train_17"]["image"] == "train_set/images/17.jpg"
    with pytest.raises(DatasetFormatError, match="neither"):
        read("affectnet", tmp_path / "train_set" / "annotations")


# --- RAF-DB ------------------------------------------------------------------------------
def test_rafdb_compound_and_basic(tmp_path):
    compound = tmp_path / "compound" / "EmoLabel"
    compound.mkdir(parents=True)
    (compound / "list_patition_label.txt").write_text(
        "train_0001.jpg 1\ntest_0001.jpg 10\ntrain_0002.jpg 12\ntrain_0003.jpg\n")
    records, report = read("rafdb", tmp_path)
    assert records["compound_train_0001"]["emotions"] == ["happiness", "surprise"]
    assert records["compound_test_0001"]["emotions"] == ["anger", "disgust"]
    # the release's own partition, from the name prefix
    assert records["compound_train_0001"]["split"] == "train"
    assert records["compound_test_0001"]["split"] == "test"
    assert records["compound_train_0001"]["image"] == \
        "compound/Image/aligned/train_0001_aligned.jpg"
    assert report.skipped == {"value out of range": 1, "wrong number of fields": 1}
    basic = tmp_path / "basic" / "EmoLabel"
    basic.mkdir(parents=True)
    (basic / "list_patition_label.txt").write_text("train_00001.jpg 4\ntest_00001.jpg 7\n")
    records, _ = read("rafdb", tmp_path, subset="basic")
    assert records["basic_train_00001"]["emotions"] == ["happiness"]
    assert records["basic_test_00001"]["split"] == "test"


# --- FaceME ------------------------------------------------------------------------------
def test_faceme_votes_groups_and_canonical_names(tmp_path):
    header = ["image", "annotator", "emotions/Happy", "internal feelings/bored",
              "health status/tired"]
    write_csv(tmp_path / "faceme_labels.csv", [
        header, ["images/1.jpg", "a", "1", "1", "0"], ["images/1.jpg", "b", "1", "0", "0"],
        ["images/1.jpg", "c", "0", "1", "1"], ["images/2.jpg", "a", "0", "0", "1"],
        ["images/2.jpg", "b", "0", "0", "1"], ["images/2.jpg", "b", "1", "1", "1"],
        ["images/2.jpg", "c", "2", "0", "0"]])
    records, report = read("faceme", tmp_path)
    assert records["images_1"]["emotions"] == ["happiness", "bored"]
    assert records["images_1"]["meta"]["labels"] == {"emotions": ["Happy"],
                                                     "internal feelings": ["bored"]}
    assert records["images_2"]["emotions"] == ["tired"]
    assert report.skipped == {"duplicate annotator for image": 1, "value out of range": 1}
    three, _ = read("faceme", tmp_path, min_votes=3)
    assert three["images_1"]["emotions"] == []
    write_csv(tmp_path / "bad.csv", [["file", "rater", "happy"]])
    with pytest.raises(DatasetFormatError, match="header must be"):
        read("faceme", tmp_path, labels_file="bad.csv")
