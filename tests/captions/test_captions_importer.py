"""`expblip import-captions`: released LAVIS caption files attach to records by image path."""
import json

import pytest

from lavis_ext.captions.importer import SuffixIndex, import_captions, path_parts
from lavis_ext.cli import main
from lavis_ext.data.records import load_records, new_record, save_records


def records():
    out = [new_record(f"aligned/{i:04d}_aligned.jpg", f"{i:04d}", "rafau", "test",
                      aus={"12": 1}) for i in range(1, 5)]
    out += [new_record(f"{s}/T1/0001.jpg", f"{s}_T1_0001", "bp4d", "train", aus={"6": 0})
            for s in ("F001", "F002")]
    return out


def test_round_trip_with_another_root_prefix(tmp_path, capsys):
    save_records(records(), tmp_path / "records.json")
    released = [
        # the authors' root, forward and backward slashes
        {"image": "/home/someone/data/RAF-AU/aligned/0001_aligned.jpg",
         "caption": "The lip corners are pulled up."},
        {"image": "D:\\data\\RAF-AU\\aligned\\0002_aligned.jpg",
         "caption": ["The lips are pulled up at the corners.", "A smile with raised cheeks."]},
        {"image": "RAF-AU/aligned/0002_aligned.jpg",  # a second entry for the same image
         "caption": "The lips are pulled up at the corners."},  # repeated: kept once
        {"image": "/data/BP4D/F002/T1/0001.jpg", "caption": "Only F002, never F001."},
        {"image": "/elsewhere/9999_aligned.jpg", "caption": "No such image."},
        {"image": "T1/0001.jpg", "caption": "Fits F001 and F002 equally: ambiguous."},
    ]
    (tmp_path / "released.json").write_text(json.dumps(released))
    code = main(["import-captions", "--kind", "au-llm", "--from",
                 str(tmp_path / "released.json"), "--ann", str(tmp_path / "records.json"),
                 "--out", str(tmp_path / "out.json")])
    printed = capsys.readouterr().out
    assert code == 0
    out = {r["image_id"]: r for r in load_records(tmp_path / "out.json")}
    assert out["0001"]["captions"]["au-llm"] == ["The lip corners are pulled up."]
    assert out["0002"]["captions"]["au-llm"] == ["The lips are pulled up at the corners.",
                                                 "A smile with raised cheeks."]
    assert out["0002"]["caption"] == out["0002"]["captions"]["au-llm"]
    assert out["F002_T1_0001"]["captions"]["au-llm"] == ["Only F002, never F001."]
    assert "captions" not in out["F001_T1_0001"] and "captions" not in out["0003"]
    assert "matched      4 entries -> 4 captions added" in printed
    assert "unmatched    1 entries (e.g. /elsewhere/9999_aligned.jpg)" in printed
    assert "ambiguous    1 entries" in printed
    assert "6: 3 with captions['au-llm'], 3 without" in printed


def test_default_out_is_the_caption_path_rule(tmp_path, capsys, monkeypatch):
    """Without --out, one prepared split goes where the configs and the pipeline read it."""
    from lavis_ext.captions.paths import captions_path

    monkeypatch.chdir(tmp_path)
    rafau = [r for r in records() if r["dataset"] == "rafau"]
    save_records(rafau, tmp_path / "test.json")
    (tmp_path / "released.json").write_text(json.dumps(
        [{"image": "/x/RAF-AU/aligned/0001_aligned.jpg", "caption": "The lips part."}]))
    argv = ["import-captions", "--kind", "au-llm", "--from", str(tmp_path / "released.json"),
            "--ann", str(tmp_path / "test.json")]
    assert main(argv) == 0
    written = tmp_path / "runs" / "paper" / "captions" / "rafau_test.json"
    assert written.resolve() == (tmp_path / captions_path("runs/paper", "rafau", "test")).resolve()
    assert load_records(written)[0]["captions"]["au-llm"] == ["The lips part."]
    assert main(argv + ["--workdir", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "captions" / "rafau_test.json").is_file()
    save_records(records(), tmp_path / "mixed.json")  # two datasets: the rule cannot choose
    assert main(argv[:-1] + [str(tmp_path / "mixed.json")]) == 2
    assert "dataset/split pairs" in capsys.readouterr().err


def test_caption_path_rule_round_trip():
    from lavis_ext.captions.paths import captions_path, parse_captions_path

    path = captions_path("runs/paper", "bp4d_probe", "train")
    assert path.as_posix() == "runs/paper/captions/bp4d_probe_train.json"
    assert parse_captions_path(path) == ("runs/paper", "bp4d_probe", "train")
    for bad in ("runs/paper/rafau_test.json", "runs/paper/captions/rafau.json",
                "runs/paper/captions/rafau_dev.json"):
        with pytest.raises(ValueError, match="<workdir>/captions/<dataset>_<split>.json"):
            parse_captions_path(bad)
    with pytest.raises(ValueError, match="split"):
        captions_path("runs/paper", "rafau", "dev")


def test_suffix_rule():
    assert path_parts("C:\\a\\b.jpg")[-2:] == ("a", "b.jpg")
    index = SuffixIndex([{"image": "RAF-AU/aligned/1.jpg"}, {"image": "other/1.jpg"}])
    assert index.find("aligned/1.jpg") == [0]  # the record's path is the longer one
    assert index.find("/root/RAF-AU/aligned/1.jpg") == [0]
    assert sorted(index.find("1.jpg")) == [0, 1]  # a bare name fits both: ambiguous
    assert index.find("x/aligned/1.jpg") == []  # disagrees on a shared component
    report = import_captions([dict(new_record("a/1.jpg", "1", "d", "test"))],
                             [("z/a/1.jpg", ["  spaced   text "])], "fuse")
    assert report.captions_added == 1 and report.records_without == 0


def test_bad_files_and_nothing_matched(tmp_path, capsys):
    save_records(records(), tmp_path / "records.json")
    args = ["import-captions", "--kind", "au-llm", "--ann", str(tmp_path / "records.json"),
            "--out", str(tmp_path / "out.json"), "--from"]
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "a.jpg", "caption": 3}]))
    assert main(args + [str(tmp_path / "bad.json")]) == 2
    assert "bad.json[0]: 'caption' must be a string or a list" in capsys.readouterr().err
    (tmp_path / "none.json").write_text(json.dumps([{"image": "/x/zzz.jpg", "caption": "a"}]))
    assert main(args + [str(tmp_path / "none.json")]) == 3
    assert not (tmp_path / "out.json").exists()
    assert main(args[:2] + ["Bad Kind"] + args[3:] + [str(tmp_path / "none.json")]) == 2
