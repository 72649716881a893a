"""The probe's parts: label table, AU subsets by name, scores and tables, labelled features,
feature cache. End-to-end runs under the runner: test_probe_runner.py, test_probe_configs.py."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from lavis_ext import facs
from lavis_ext.tasks.probe.data import LabelledFeatures
from lavis_ext.tasks.probe.features import FeatureCache
from lavis_ext.tasks.probe.labels import LabelSpace, default_names, parse_aus
from lavis_ext.tasks.probe.report import score, write_tables


def test_au_labels_mask_uncoded_values_and_count_what_they_skip():
    space = LabelSpace("au", (1, 12))
    records = [{"aus": {"1": 1, "12": None}}, {"aus": {"1": 0, "12": 1, "4": 1}},
               {"aus": {"4": 1}}, None]
    encoded = space.encode(records)
    assert encoded.positions == [0, 1]
    assert encoded.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert encoded.masks.tolist() == [[True, False], [True, True]]  # null: not "absent"
    assert dict(encoded.skipped) == {"none of the probed AUs coded": 1,
                                     "image id not in the records": 1}


def test_emotion_labels_take_one_canonical_emotion():
    space = LabelSpace("emotion", ("neutral", "happiness"))
    encoded = space.encode([{"emotions": ["Joy"]}, {"emotions": ["happy", "surprised"]},
                            {"emotions": []}, {"emotions": ["anger"]}, {"emotions": ["neutral"]}])
    assert encoded.positions == [0, 4] and encoded.targets.tolist() == [1, 0]
    assert dict(encoded.skipped) == {"more than one emotion": 1, "no emotion label": 1,
                                     "emotion outside the probed classes": 1}
    with pytest.raises(ValueError, match="run.probe.target"):
        LabelSpace("valence", ("x",))
    with pytest.raises(ValueError, match="no emotion class"):
        LabelSpace("emotion", ())


def test_default_classes_come_from_the_training_records():
    records = [{"aus": {"12": 1, "4": 0, "1": None}, "emotions": ["surprise", "joy"]},
               {"aus": {"2": 1}, "emotions": ["contempt"]}]
    assert default_names("au", records) == [2, 12]  # positive somewhere; 4 never is
    assert default_names("emotion", records) == ["happiness", "surprise", "contempt"]


def test_the_table4_rafau_set_is_selected_by_name():
    assert parse_aus("rafau13") == list(facs.RAFAU_PROBE_AUS) == \
        [1, 2, 4, 5, 6, 9, 10, 12, 16, 17, 25, 26, 27]
    assert parse_aus(" RAFAU13 ") == parse_aus("rafau13")
    assert parse_aus([12, "4"]) == [12, 4] and parse_aus(None) is None
    with pytest.raises(ValueError, match="run.probe.aus"):
        parse_aus("rafau12")
    with pytest.raises(ValueError, match="run.probe.aus"):
        parse_aus([1, 3])  # AU 3 is not a FACS AU of the paper


def test_au_scores_per_au_and_average():
    # AU1: TP 1, FP 1, FN 0 -> 2/3; AU2: TP 0, FP 0, FN 1 -> 0; AU3 column uncoded -> None.
    logits = np.array([[5.0, -5.0, 5.0], [5.0, -5.0, 5.0], [-5.0, -5.0, 5.0]])
    targets = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    masks = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    out = score("au", (1, 2, 4), logits, targets, masks)
    assert out["au_f1"] == {"1": pytest.approx(2 / 3), "2": 0.0, "4": None}
    assert out["au_f1_avg"] == pytest.approx(1 / 3) and out["n_scored"] == 3
    out = score("emotion", ("a", "b"), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
                np.array([0, 1, 0]), np.ones((3, 1), dtype=bool))
    assert out["accuracy"] == pytest.approx(2 / 3) and out["agg_metrics"] == out["accuracy"]
    with pytest.raises(ValueError, match="no evaluated image"):
        score("au", (1,), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 1), dtype=bool))


def _report(row: str, f1: float, classes=("1", "12")) -> dict:
    return {"target": "au", "dataset": "bp4d_au", "split": "test", "mode": "linear",
            "row": row, "classes": list(classes), "au_f1": {c: f1 for c in classes},
            "au_f1_avg": f1}


def test_each_run_replaces_its_own_row_of_the_table(tmp_path):
    write_tables(_report("QFormer(AU)", 0.5), tmp_path)
    write_tables(_report("ViT-G", 0.25), tmp_path)
    write_tables(_report("QFormer(AU)", 0.75), tmp_path)  # a rerun replaces its row
    with open(tmp_path / "probe_au_bp4d_au_test.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["Features", "AU1", "AU12", "Avg."], ["QFormer(AU)", "75.0", "75.0", "75.0"],
                    ["ViT-G", "25.0", "25.0", "25.0"]]
    md = (tmp_path / "probe_au_bp4d_au_test.md").read_text()
    assert "| Features | AU1 | AU12 | Avg. |" in md and "| ViT-G | 25.0 | 25.0 | 25.0 |" in md
    assert (tmp_path / "probe_au_bp4d_au_test.png").read_bytes()[:4] == b"\x89PNG"
    write_tables(_report("other AUs", 0.1, classes=("4",)), tmp_path)  # other columns: new table
    with open(tmp_path / "probe_au_bp4d_au_test.csv", newline="") as handle:
        assert [r[0] for r in csv.reader(handle)] == ["Features", "other AUs"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_labelled_features_keep_only_the_encoded_items():
    encoded = LabelSpace("emotion", ("neutral", "anger")).encode(
        [{"emotions": ["anger"]}, {"emotions": []}, {"emotions": ["neutral"]},
         {"emotions": ["anger"]}])
    data = LabelledFeatures("d", "test", ["a", "b", "c", "d"], encoded, images=None)
    assert len(data) == 3 and data.skipped == {"no emotion label": 1}
    with pytest.raises(RuntimeError, match="not extracted yet"):
        data[0]
    # Position 2's image was unreadable; rows come back in another order.
    data.attach([3, 0], torch.tensor([[3.0], [0.0]]))
    assert len(data) == 2 and data.skipped["unreadable image"] == 1
    items = [data[i] for i in range(2)]
    assert [i["image_id"] for i in items] == ["a", "d"]
    assert [i["features"].item() for i in items] == [0.0, 3.0]
    assert [int(i["probe_target"]) for i in items] == [1, 1]
    batch = data.collater(items)
    assert batch["features"].shape == (2, 1) and batch["image_id"] == ["a", "d"]


def test_feature_cache_names_files_by_everything_the_features_depend_on(tmp_path):
    cache = FeatureCache(tmp_path)
    path = cache.path("bp4d_au_train_qformer", ["tag", "weights", ["a", "b"]])
    assert path != cache.path("bp4d_au_train_qformer", ["tag", "other weights", ["a", "b"]])
    assert cache.load(path) is None
    cache.save(path, [0, 2], ["a", "c"], torch.ones(2, 3))
    positions, features = cache.load(path)
    assert positions == [0, 2] and torch.equal(features, torch.ones(2, 3))
    assert path.parent == tmp_path and path.name.startswith("bp4d_au_train_qformer_")
