"""The probe task end to end under LAVIS's stock runner (train.py), on planted features.

"Images" here are vectors in which the labels are planted along fixed directions, so a linear
probe on them must score high, and one trained on shuffled labels must not. Run as a script
(``torch.distributed.run ... test_probe_runner.py --cfg-path X``) it is the two-rank launcher.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import lavis_ext  # noqa: F401  (registers the tasks, applies the compat fixes)
from lavis.common.registry import registry
from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from lavis.models.base_model import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from lavis_ext.entry import train_main  # noqa: E402

NAME = "lavis_ext_test_probe_planted"
CONFIGS = Path(tempfile.mkdtemp(prefix="lavis_ext_probe_cfg_"))
AUS = (1, 4, 12, 25)
EMOTIONS = ("neutral", "happiness", "surprise", "anger")
DIM = 16
SIZES = {"train": 192, "test": 96}


class PlantedSet(torch.utils.data.Dataset):
    """Vectors with planted AUs and emotion; the labels live in ``annotation`` (records)."""

    def __init__(self, split: str, seed: int, shuffle_labels: bool) -> None:
        n = SIZES[split]
        g = torch.Generator().manual_seed(seed)
        aus = torch.rand(n, len(AUS), generator=g) < 0.3
        emotion = torch.randint(len(EMOTIONS), (n,), generator=g)
        fixed = torch.Generator().manual_seed(99)
        au_dirs = torch.randn(len(AUS), DIM, generator=fixed) * 1.5
        emotion_dirs = torch.randn(len(EMOTIONS), DIM, generator=fixed) * 1.5
        self.x = torch.randn(n, DIM, generator=g) * 0.5 + aus.float() @ au_dirs \
            + nn.functional.one_hot(emotion, len(EMOTIONS)).float() @ emotion_dirs
        order = torch.randperm(n, generator=g) if shuffle_labels else torch.arange(n)
        self.annotation = []
        for i in range(n):
            j = int(order[i])  # shuffled: item i gets the labels of item j
            record = {"image_id": f"{split}{i:03d}", "caption": [],
                      "aus": {str(a): int(aus[j, k]) for k, a in enumerate(AUS)},
                      "emotions": [EMOTIONS[int(emotion[j])]]}
            if i == 0:
                record["aus"]["12"] = None  # not coded: masked, not counted as absent
            if i == 1:
                record["aus"], record["emotions"] = {}, []  # nothing to probe: skipped
            self.annotation.append(record)
        self.unreadable = {3} if split == "test" else set()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict | None:
        if i in self.unreadable:
            return None  # as FacialRecordDataset does for a file it cannot decode
        return {"image": self.x[i], "image_id": self.annotation[i]["image_id"]}


class PlantedBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": str(CONFIGS / "dataset.yaml")}

    def build_datasets(self) -> dict:
        shuffle = bool(self.config.get("shuffle_train_labels", False))
        return {"train": PlantedSet("train", 0, shuffle), "test": PlantedSet("test", 1, False)}


class PlantedEncoder(BaseModel):
    """``qformer``: a linear map of the vector (all information); ``vision``: 2 of 16 values."""

    PRETRAINED_MODEL_CONFIG_DICT = {"default": str(CONFIGS / "model.yaml")}
    images_encoded = 0  # class-wide, to see whether features came from the cache

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(DIM, DIM)
        self.unused = nn.Linear(DIM, 2)  # never reaches the features
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @torch.no_grad()
    def probe_features(self, image: torch.Tensor, source: str) -> torch.Tensor:
        type(self).images_encoded += len(image)
        return self.proj(image) if source == "qformer" else image[:, :2]

    @classmethod
    def from_config(cls, cfg) -> "PlantedEncoder":
        return cls()


def _register() -> None:
    (CONFIGS / "dataset.yaml").write_text(f"datasets:\n  {NAME}:\n    data_type: features\n")
    (CONFIGS / "model.yaml").write_text(f"model:\n  arch: {NAME}\n  load_finetuned: False\n"
                                        "  load_pretrained: False\n")
    if registry.get_model_class(NAME) is None:
        registry.register_model(NAME)(PlantedEncoder)
    if registry.get_builder_class(NAME) is None:
        registry.register_builder(NAME)(PlantedBuilder)


_register()


def write_config(folder: Path, probe: dict, shuffle: bool = False, **run) -> Path:
    cfg = {"model": {"arch": NAME, "model_type": "default"},
           "datasets": {NAME: {"shuffle_train_labels": shuffle}},
           "run": {"task": "probe", "probe": {"cache_dir": str(folder / "cache"),
                                              "table_dir": str(folder / "tables"), **probe},
                   "lr_sched": "linear_warmup_cosine_lr", "init_lr": 0.05, "min_lr": 0.0,
                   "warmup_lr": 0.05, "warmup_steps": 0, "weight_decay": 0.0, "max_epoch": 8,
                   "batch_size_train": 16, "batch_size_eval": 32, "num_workers": 0, "seed": 1,
                   "output_dir": str(folder / "out"), "amp": False, "device": "cpu",
                   "world_size": 1, "dist_url": "env://", "distributed": True,
                   "train_splits": ["train"], "test_splits": ["test"], "evaluate": False,
                   **run}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "probe.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def test_scores(folder: Path) -> dict:
    jobs = [p for p in (folder / "out").iterdir() if p.is_dir()]
    assert len(jobs) == 1, jobs
    found = sorted((jobs[0] / "result").glob("probe_test_epoch*_scores.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


test_scores.__test__ = False  # a helper, not a test


def run_probe(folder: Path, probe: dict, shuffle: bool = False, **run) -> dict:
    assert train_main(["--cfg-path", str(write_config(folder, probe, shuffle, **run))]) == 0
    return test_scores(folder)


def all_positive_f1(split: str = "test") -> float:
    """Average F1 of predicting every AU present: what a probe that learned nothing can reach."""
    records = PlantedSet(split, 1, False).annotation
    scores = []
    for a in AUS:
        values = [r["aus"].get(str(a)) for r in records if r["aus"].get(str(a)) is not None]
        p = sum(values) / len(values)
        scores.append(2 * p / (1 + p))
    return sum(scores) / len(scores)


@pytest.mark.parametrize("target", ["au", "emotion"])
def test_linear_probe_learns_planted_labels_and_not_shuffled_ones(tmp_path, plain_process,
                                                                  target):
    probe = {"target": target, "source": "qformer", "mode": "linear", "row_name": "planted"}
    if target == "au":
        probe["aus"] = list(AUS)
    planted = run_probe(tmp_path / "planted", probe)
    shuffled = run_probe(tmp_path / "shuffled", dict(probe, row_name="shuffled"), shuffle=True)
    if target == "au":
        chance = all_positive_f1()
        assert planted["au_f1_avg"] >= 0.85, planted
        assert shuffled["au_f1_avg"] <= chance, (shuffled, chance)
        assert planted["classes"] == ["1", "4", "12", "25"]
    else:
        assert planted["accuracy"] >= 0.9, planted
        assert shuffled["accuracy"] <= 0.45, shuffled  # chance: 0.25
        # Classes default to the emotions seen in train, in lavis_ext.facs order.
        assert planted["classes"] == ["neutral", "happiness", "anger", "surprise"]
    # 96 test items: one unreadable, one without labels, the rest scored.
    assert planted["n_scored"] == 94
    assert planted["skipped"] == {"unreadable image": 1, "none of the probed AUs coded": 1} \
        if target == "au" else {"unreadable image": 1, "no emotion label": 1}


def test_linear_probe_caches_features_and_fills_one_table(tmp_path, plain_process):
    probe = {"target": "au", "aus": list(AUS), "source": "qformer", "mode": "linear",
             "row_name": "QFormer(AU)"}
    PlantedEncoder.images_encoded = 0
    first = run_probe(tmp_path / "a", dict(probe, cache_dir=str(tmp_path / "cache"),
                                           table_dir=str(tmp_path / "tables")), max_epoch=2)
    # Every labelled item encoded once (train 191, test 94 readable) plus 2 to size the head.
    assert PlantedEncoder.images_encoded == 191 + 94 + 2
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    PlantedEncoder.images_encoded = 0
    run_probe(tmp_path / "b", dict(probe, row_name="ViT-G", source="vision",
                                   cache_dir=str(tmp_path / "cache"),
                                   table_dir=str(tmp_path / "tables")), max_epoch=2)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4  # another source, other files
    PlantedEncoder.images_encoded = 0
    again = run_probe(tmp_path / "c", dict(probe, cache_dir=str(tmp_path / "cache"),
                                           table_dir=str(tmp_path / "tables")), max_epoch=2)
    assert PlantedEncoder.images_encoded == 2  # only the head-sizing call: features cached
    assert again["au_f1"] == first["au_f1"]  # same features, same seed, same head
    table = (tmp_path / "tables" / f"probe_au_{NAME}_test.md").read_text()
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")]
    assert rows == ["| Features", "| QFormer(AU)", "| ViT-G"], table
    assert f"{100 * first['au_f1_avg']:.1f} |" in table.splitlines()[4]
    png = tmp_path / "tables" / f"probe_au_{NAME}_test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_trains_the_encoder_through_the_runner(tmp_path, plain_process):
    probe = {"target": "emotion", "source": "qformer", "mode": "finetune", "row_name": "ft"}
    scores = run_probe(tmp_path, probe, init_lr=0.01, warmup_lr=0.01)
    assert scores["accuracy"] >= 0.9, scores
    job = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    checkpoint = torch.load(sorted(job.glob("checkpoint_*.pth"))[-1], map_location="cpu",
                            weights_only=True)["model"]
    assert not torch.equal(checkpoint["encoder.proj.weight"], torch.eye(DIM))  # it moved
    # The part that never reaches the features is frozen, so DDP can train the rest.
    assert "encoder.unused.weight" not in checkpoint


def test_bad_probe_settings_name_the_key(tmp_path, plain_process):
    with pytest.raises(ValueError, match="run.probe.source"):
        run_probe(tmp_path, {"target": "au", "source": "pixels"})
    with pytest.raises(ValueError, match="run.probe: unknown key"):
        run_probe(tmp_path, {"target": "au", "epochs": 3})
    with pytest.raises(ValueError, match=r"run.probe: unknown key\(s\) \['key'\]"):
        run_probe(tmp_path, {"target": "au", "key": 3})  # a local name of __init__, not a key
    with pytest.raises(ValueError, match="run.probe.aus"):
        run_probe(tmp_path, {"target": "au", "aus": "bp4d_typo"})
    with pytest.raises(ValueError, match="no item has a usable emotion label"):
        run_probe(tmp_path, {"target": "emotion", "emotions": ["contempt"]})


@pytest.mark.slow
def test_two_ranks_share_the_data_and_the_extraction(tmp_path):
    """Under DDP each rank encodes half the images and trains on half the features."""
    probe = {"target": "au", "aus": list(AUS), "source": "qformer", "mode": "linear",
             "row_name": "ddp"}
    cfg = write_config(tmp_path, probe, max_epoch=4)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LAVIS_EXT_DIST_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         __file__, "--cfg-path", str(cfg)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # 191 labelled train features: 96 per rank (the DistributedSampler pads to an even split),
    # 16 per batch: 6 iterations per epoch (one process: 11).
    assert "6 iters per inner epoch" in log and "11 iters" not in log, log[-4000:]
    scores = test_scores(tmp_path)
    assert scores["au_f1_avg"] >= 0.85 and scores["n_scored"] == 94, scores
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 2 and not any(".rank" in name for name in cached), cached


if __name__ == "__main__":  # the per-rank entry of test_two_ranks_...
    sys.exit(train_main())
