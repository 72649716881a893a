"""Both tasks under LAVIS's stock runner (train.py), on CPU, with test-only model and data."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset, default_collate

import lavis_ext  # noqa: F401  (registers the tasks, applies the compat fixes)
from lavis.common.registry import registry
from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from lavis.models.base_model import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
import train  # noqa: E402  (the repository's own train.py: a missing one is a failure)

NAME = "lavis_ext_test_planted_faces"
CONFIGS = Path(tempfile.mkdtemp(prefix="lavis_ext_task_cfg_"))
AUS = (4, 12)
CAPTIONS = {(0, 0): "the face is relaxed", (1, 0): "the brows are lowered",
            (0, 1): "it is a people who smiles", (1, 1): "lowers the brows and smiles"}


class PlantedSet(Dataset):
    """Vectors with two planted AUs; references and labels in ``annotation`` records."""

    def __init__(self, n: int, seed: int, split: str) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, 2, generator=g) < 0.5).long()
        directions = torch.randn(2, 6, generator=torch.Generator().manual_seed(7)) * 2
        self.x = torch.randn(n, 6, generator=g) * 0.5 + self.labels.float() @ directions
        self.annotation = [
            {"image_id": f"{split}{i:03d}", "aus": {"4": int(a), "12": int(b)},
             "emotions": ["happiness"] if b else [],
             "caption": [CAPTIONS[(int(a), int(b))], "a face"]}
            for i, (a, b) in enumerate(self.labels.tolist())]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "image_id": self.annotation[i]["image_id"],
                "text_input": self.annotation[i]["caption"][0]}

    def collater(self, samples: list) -> dict:
        return default_collate(samples)


class PlantedBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": str(CONFIGS / "dataset.yaml")}

    def build_datasets(self) -> dict:
        return {"train": PlantedSet(96, 0, "tr"), "val": PlantedSet(40, 1, "va"),
                "test": PlantedSet(40, 2, "te")}


class PlantedModel(BaseModel):
    """probe_features for the probe task; a caption head + generate for captioning."""

    PRETRAINED_MODEL_CONFIG_DICT = {"default": str(CONFIGS / "model.yaml")}

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.caption_head = nn.Linear(6, 2)

    def probe_features(self, image: torch.Tensor, source: str) -> torch.Tensor:
        return self.proj(image)

    def forward(self, samples: dict) -> dict:
        target = torch.tensor([[("brows" in t), ("smile" in t)] for t in samples["text_input"]],
                              dtype=torch.float32)
        logits = self.caption_head(samples["image"])
        return {"loss": nn.functional.binary_cross_entropy_with_logits(logits, target)}

    def generate(self, samples: dict, use_nucleus_sampling: bool = False, num_beams: int = 5,
                 max_length: int = 30, min_length: int = 1) -> list[str]:
        on = (self.caption_head(samples["image"]) > 0).long().tolist()
        return [CAPTIONS[(a, b)] for a, b in on]

    @classmethod
    def from_config(cls, cfg) -> "PlantedModel":
        return cls()


def _register() -> None:
    (CONFIGS / "dataset.yaml").write_text(f"datasets:\n  {NAME}:\n    data_type: features\n")
    (CONFIGS / "model.yaml").write_text(f"model:\n  arch: {NAME}\n  load_finetuned: False\n"
                                        f"  load_pretrained: False\n")
    if registry.get_model_class(NAME) is None:
        registry.register_model(NAME)(PlantedModel)
    if registry.get_builder_class(NAME) is None:
        registry.register_builder(NAME)(PlantedBuilder)


_register()


def run_config(folder: Path, run: dict) -> Path:
    cfg = {"model": {"arch": NAME, "model_type": "default"}, "datasets": {NAME: {}},
           "run": {"lr_sched": "linear_warmup_cosine_lr", "init_lr": 0.05, "min_lr": 0.001,
                   "warmup_lr": 0.05, "warmup_steps": 0, "weight_decay": 0.0, "max_epoch": 4,
                   "batch_size_train": 16, "batch_size_eval": 16, "num_workers": 0,
                   "seed": 1, "output_dir": str(folder / "out"), "amp": False,
                   "device": "cpu", "world_size": 1, "dist_url": "env://",
                   "distributed": True, "train_splits": ["train"], "valid_splits": ["val"],
                   "test_splits": ["test"], "evaluate": False, **run}}
    path = folder / "run.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def only_job(folder: Path) -> Path:
    jobs = [p for p in (folder / "out").iterdir() if p.is_dir()]
    assert len(jobs) == 1, jobs
    return jobs[0]


@pytest.mark.parametrize("mode", ["linear", "finetune"])
def test_probe_under_the_stock_runner(tmp_path, plain_process, mode):
    cfg = run_config(tmp_path, {"task": "probe", "probe": {
        "target": "au", "source": "qformer", "mode": mode, "row_name": "QFormer(test)",
        "cache_dir": str(tmp_path / "cache"), "table_dir": str(tmp_path / "tables")}})
    assert train.main(["--cfg-path", str(cfg)]) == 0
    job = only_job(tmp_path)
    assert (job / "checkpoint_best.pth").is_file()
    test_scores = json.loads((job / "result" / "probe_test_epochbest_scores.json").read_text())
    assert test_scores["au_f1_avg"] > 0.75, test_scores
    cached = list((tmp_path / "cache").glob("*.pt")) if (tmp_path / "cache").is_dir() else []
    assert len(cached) == (3 if mode == "linear" else 0)  # train, val, test features
    checkpoint = torch.load(job / "checkpoint_best.pth", map_location="cpu")
    # LAVIS keeps trainable weights only: the frozen encoder is left out in linear mode.
    assert ("encoder.proj.weight" in checkpoint["model"]) == (mode == "finetune")
    md = (tmp_path / "tables" / f"probe_au_{NAME}_test.md").read_text()
    assert "| QFormer(test) |" in md and "AU4 | AU12 | Avg." in md


def test_facial_captioning_under_the_stock_runner(tmp_path, plain_process):
    cfg = run_config(tmp_path, {"task": "facial_captioning", "num_beams": 2, "max_len": 20,
                                "min_len": 1, "select_metric": "au_f1_macro",
                                "embedding_encoder": "none", "meteor": False})
    assert train.main(["--cfg-path", str(cfg)]) == 0
    job = only_job(tmp_path)
    results = job / "result"
    for epoch in range(4):
        assert (results / f"val_epoch{epoch}_scores.json").is_file()
    best = json.loads((results / "test_epochbest_scores.json").read_text())
    assert best["per_sample"][0]["image_id"] == "te000"  # string ids, zeros kept
    assert best["metrics"]["au_f1_macro"] > 0.75, best["metrics"]
    assert (job / "evaluate.txt").is_file()
