"""The probe task: linear probe with a feature cache, full fine-tuning, tables and chart."""
import csv
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

import lavis_ext  # noqa: F401  (registers the tasks)
from lavis.common.registry import registry
from lavis_ext.tasks.probe import ProbeTask, run_probe

AUS = (1, 4, 12, 25)


class ItemSet(Dataset):
    """Samples are dicts as the caption datasets yield; labels live in ``records``."""

    def __init__(self, items, records):
        self.items, self.records = items, records

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def planted(n, split, seed, dim=24):
    """'Images' that are feature vectors: AU k adds a fixed direction, plus noise."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(len(AUS), dim, generator=torch.Generator().manual_seed(99))
    labels = torch.rand(n, len(AUS), generator=g) < 0.3
    x = torch.randn(n, dim, generator=g) * 0.7 + labels.float() @ directions
    items, records = [], []
    for i in range(n):
        image_id = f"{split}-{i:03d}"
        aus = {str(a): int(labels[i, k]) for k, a in enumerate(AUS)}
        if i == 0:
            aus["12"] = None  # not coded: must be masked, not counted as absent
        items.append({"image": x[i], "image_id": image_id, "text_input": ""})
        records.append({"image_id": image_id, "aus": aus, "emotions": [], "caption": []})
    records.append({"image_id": f"{split}-nolabel", "aus": {}, "emotions": [], "caption": []})
    return ItemSet(items, records)


class VectorEncoder(nn.Module):
    """Any module with probe_features works; this one counts its calls."""

    def __init__(self, dim=24):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.calls = 0

    def probe_features(self, image, source):
        self.calls += 1
        return self.proj(image) if source == "qformer" else image[:, :2]


def all_positive_f1(dataset):
    scores = []
    for a in AUS:
        ys = [r["aus"].get(str(a)) for r in dataset.records if r["aus"].get(str(a)) is not None]
        p = sum(ys) / len(ys)
        scores.append(2 * p / (1 + p))
    return float(np.mean(scores))


def test_linear_probe_beats_chance_caches_features_and_writes_tables(tmp_path):
    data = {"planted": {"train": planted(240, "tr", 0), "test": planted(120, "te", 1)}}
    task = ProbeTask("au", "qformer", "linear", aus=list(AUS), cache_dir=str(tmp_path / "cache"),
                     row_name="QFormer(AU)", train_batch_size=32)
    encoder = VectorEncoder()
    before = encoder.proj.weight.detach().clone()
    out = run_probe(task, encoder, data, epochs=15, lr=0.05, output_dir=tmp_path)
    metrics = out["test"]
    baseline = all_positive_f1(data["planted"]["test"])
    assert metrics["au_f1_avg"] > baseline + 0.2, (metrics, baseline)
    assert torch.equal(before, encoder.proj.weight)  # frozen encoder
    assert len(list((tmp_path / "cache").glob("planted_*_qformer_*.pt"))) == 2
    # Second run: features come from the disk cache, not the encoder.
    calls = encoder.calls
    task2 = ProbeTask("au", "qformer", "linear", aus=list(AUS), cache_dir=str(tmp_path / "cache"),
                      row_name="ViT-G", train_batch_size=32)
    run_probe(task2, encoder, data, epochs=2, lr=0.05, output_dir=tmp_path)
    assert encoder.calls == calls + 1  # only the one call that sizes the head
    with open(tmp_path / "probe_au_planted_test.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Features", "AU1", "AU4", "AU12", "AU25", "Avg."]
    assert [r[0] for r in rows[1:]] == ["QFormer(AU)", "ViT-G"]  # one row per model
    assert float(rows[1][-1]) == pytest.approx(100 * metrics["au_f1_avg"], abs=0.05)
    md = (tmp_path / "probe_au_planted_test.md").read_text()
    assert "| Features | AU1 | AU4 | AU12 | AU25 | Avg. |" in md
    assert (tmp_path / "probe_au_planted_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = (tmp_path / "probe_test_epochfinal_scores.json").read_text()
    assert '"image id not in the records"' not in scores and '"n_scored": 120' in scores


def test_finetuning_moves_the_encoder():
    data = {"planted": {"train": planted(64, "tr", 2), "test": planted(32, "te", 3)}}
    task = ProbeTask("au", "qformer", "finetune", aus=list(AUS), train_batch_size=16)
    encoder = VectorEncoder()
    before = encoder.proj.weight.detach().clone()
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        metrics = run_probe(task, encoder, data, epochs=2, lr=0.01, output_dir=out)["test"]
    assert not torch.equal(before, encoder.proj.weight)
    assert 0.0 <= metrics["au_f1_avg"] <= 1.0


def test_setup_from_run_cfg_and_bad_inputs(tmp_path):
    cfg = SimpleNamespace(
        run_cfg=OmegaConf.create({"task": "probe", "output_dir": str(tmp_path),
                                  "batch_size_train": 8,
                                  "probe": {"target": "emotion", "source": "vision",
                                            "mode": "linear", "row_name": "ViT-G"}}),
        model_cfg=OmegaConf.create({"arch": "x", "model_type": "y", "finetuned": ""}))
    task = registry.get_task_class("probe").setup_task(cfg=cfg)
    assert (task.target, task.source, task.train_batch_size, task.table_dir) == \
        ("emotion", "vision", 8, str(tmp_path))
    with pytest.raises(ValueError, match="run_cfg.probe.source"):
        ProbeTask("au", "pixels")
    with pytest.raises(ValueError, match="needs a 'train' split"):
        ProbeTask("au").attach_datasets({"d": {"test": planted(4, "te", 0)}})
    empty = ItemSet([], [{"image_id": "a", "aus": {}, "emotions": ["joy", "fear"],
                          "caption": []}])
    with pytest.raises(ValueError, match="more than one emotion"):
        ProbeTask("emotion").attach_datasets({"d": {"train": empty}})
    task = ProbeTask("au", aus=list(AUS))
    task.attach_datasets({"d": {"train": planted(8, "tr", 0)}})
    assert task.labels.skipped == {"none of the probed AUs coded": 1}
    with pytest.raises(TypeError, match="probe_features"):
        task.wrap_model(nn.Linear(2, 2))


def synthetic_faces(n, split, seed, emotions, size=48):
    from lavis_ext.data.synthetic.face import draw_emotion

    rng = random.Random(seed)
    items, records = [], []
    for i in range(n):
        emotion = emotions[i % len(emotions)]
        image, _ = draw_emotion([emotion], rng, size=size)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        image_id = f"{split}{i:04d}"
        items.append({"image": x, "image_id": image_id})
        records.append({"image_id": image_id, "aus": {}, "emotions": [emotion], "caption": []})
    return ItemSet(items, records)


class RandomConv(nn.Module):
    """Random, untrained conv features: the probe must find the expression in them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU())

    def probe_features(self, image, source):
        if source == "vision":  # mean colour only: carries no expression
            return image.mean(dim=(2, 3))
        return nn.functional.adaptive_avg_pool2d(self.conv(image), 4).flatten(1)


def test_probe_on_synthetic_faces_beats_chance(tmp_path):
    emotions = ("neutral", "happiness", "surprise", "anger")
    data = {"faces": {"train": synthetic_faces(200, "tr", 0, emotions),
                      "test": synthetic_faces(100, "te", 1, emotions)}}
    scores = {}
    for source in ("qformer", "vision"):
        task = ProbeTask("emotion", source, "linear", train_batch_size=32, row_name=source)
        scores[source] = run_probe(task, RandomConv(), data, epochs=15, lr=0.01,
                                   output_dir=tmp_path)["test"]
    chance = 1 / len(emotions)
    assert scores["qformer"]["accuracy"] > chance + 0.2, scores
    assert scores["qformer"]["accuracy"] > scores["vision"]["accuracy"] + 0.15, scores
    assert scores["qformer"]["macro_f1"] > chance + 0.15
    md = (tmp_path / "probe_emotion_faces_test.md").read_text()
    assert "| Features | Accuracy | Macro-F1 |" in md and "| vision |" in md


def test_tiny_exp_blip_qformer_fine_tunes_through_the_probe(tmp_path):
    cls = registry.get_model_class("exp_blip_qformer")
    if cls is None:
        pytest.skip("exp_blip_qformer not registered")
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    model = cls.from_config(cfg)
    emotions = ("happiness", "surprise")
    data = {"faces": {"train": synthetic_faces(8, "tr", 0, emotions, size=112),
                      "test": synthetic_faces(4, "te", 1, emotions, size=112)}}
    before = model.query_tokens.detach().clone()
    task = ProbeTask("emotion", "qformer", "finetune", train_batch_size=4)
    metrics = run_probe(task, model, data, epochs=1, lr=1e-3, output_dir=tmp_path)["test"]
    assert not torch.equal(before, model.query_tokens.detach())
    assert 0.0 <= metrics["accuracy"] <= 1.0
