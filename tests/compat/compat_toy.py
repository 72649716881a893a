"""A toy LAVIS plugin for the runner tests: linear regression on seeded random tensors.

Registered under test-only names so that the plugin's runners (subclasses of LAVIS's), LAVIS's
config system, task loop and checkpointing can be exercised end to end in seconds, without the BLIP-2 models. The model has
a frozen layer (like BLIP-2's frozen image encoder), which LAVIS leaves out of its checkpoints.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lavis_ext  # noqa: F401  (registers the plugin when LAVIS is imported)

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset, default_collate

from lavis.common.registry import registry
from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from lavis.models.base_model import BaseModel
from lavis.tasks.base_task import BaseTask

from lavis_ext.runners.checkpoints import load_from_config
from lavis_ext.tasks.run import RunBoundTask

NAME = "lavis_ext_toy_regression"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO_ROOT = Path(__file__).resolve().parents[2]


class ToyRegression(BaseModel):
    PRETRAINED_MODEL_CONFIG_DICT = {"default": str(CONFIG_DIR / "toy_model.yaml")}

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.frozen = nn.Linear(dim, dim)
        for p in self.frozen.parameters():
            p.requires_grad = False
        self.head = nn.Linear(dim, 1)

    def forward(self, samples: dict) -> dict:
        pred = self.head(self.frozen(samples["x"])).squeeze(-1)
        return {"loss": F.mse_loss(pred, samples["y"])}

    @classmethod
    def from_config(cls, cfg: Any) -> "ToyRegression":
        model = cls(dim=int(cfg.get("dim", 8)))
        model.load_checkpoint_from_config(cfg)
        return model

    def load_checkpoint_from_config(self, cfg: Any, **kwargs: Any) -> None:
        load_from_config(self, cfg, **kwargs)  # as the plugin's models do (ExpBlipParts)

    def load_from_pretrained(self, url_or_filename: str) -> Any:
        return self.load_checkpoint(url_or_filename)


class ToyRegressionData(Dataset):
    """``y = x @ w + noise`` with ``x`` and ``w`` drawn from ``seed`` (same on every rank)."""

    def __init__(self, num_samples: int, dim: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_samples, dim, generator=g)
        w = torch.randn(dim, generator=g)
        self.y = self.x @ w + 0.01 * torch.randn(num_samples, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index], "instance_id": index}

    def collater(self, samples: list) -> dict:
        return default_collate(samples)


class ToyRegressionBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": str(CONFIG_DIR / "toy_dataset.yaml")}

    def build_datasets(self) -> dict:
        cfg = self.config
        data = ToyRegressionData(int(cfg.num_samples), int(cfg.dim), int(cfg.seed))
        return {"train": data, "test": data}


class ToyRegressionTask(RunBoundTask, BaseTask):
    """Trains like ``image_text_pretrain``; evaluates the mean squared error into a JSON file."""

    def valid_step(self, model: Any, samples: dict) -> list:
        with torch.no_grad():
            pred = model.head(model.frozen(samples["x"])).squeeze(-1)
        return ((pred - samples["y"]) ** 2).tolist()

    def after_evaluation(self, val_result: list, split_name: str, epoch: Any, **kwargs: Any) -> dict:
        mse = sum(val_result) / len(val_result)
        metrics = {"mse": mse, "agg_metrics": -mse, "n": len(val_result)}
        out = Path(registry.get_path("result_dir")) / f"{split_name}_metrics.json"
        out.write_text(json.dumps(metrics))
        return metrics


def _register() -> None:
    if registry.get_model_class(NAME) is None:
        registry.register_model(NAME)(ToyRegression)
    if registry.get_builder_class(NAME) is None:
        registry.register_builder(NAME)(ToyRegressionBuilder)
    if registry.get_task_class(NAME) is None:
        registry.register_task(NAME)(ToyRegressionTask)


_register()


def write_run_config(folder: Path, run: dict | None = None, model: dict | None = None, datasets: dict | None = None) -> Path:
    """A run YAML for the toy model in ``folder``; ``run`` overrides the defaults below."""
    run_cfg = {
        "task": NAME,
        "lr_sched": "expblip_linear_warmup_cosine_lr",
        "init_lr": 0.05,
        "min_lr": 0.001,
        "warmup_lr": 0.05,
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_epoch": 3,
        "batch_size_train": 8,
        "batch_size_eval": 16,
        "num_workers": 0,
        "seed": 42,
        "output_dir": str(folder / "out"),
        "amp": False,
        "device": "cpu",
        "world_size": 1,
        "dist_url": "env://",
        "distributed": True,
        "train_splits": ["train"],
        "valid_splits": [],
        "test_splits": [],
        "log_freq": 50,
        "evaluate": False,
    }
    run_cfg.update(run or {})
    cfg = {
        "model": {"arch": NAME, "model_type": "default", **(model or {})},
        "datasets": {NAME: dict(datasets or {})},
        "run": run_cfg,
    }
    path = folder / "toy_run.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def job_dirs(output_dir: Path) -> list[Path]:
    """The job folders the runner made under ``output_dir`` (one per run)."""
    return sorted(p for p in Path(output_dir).iterdir() if p.is_dir())


def train_losses(job_dir: Path) -> list[float]:
    """``train_loss`` of each epoch, from the runner's ``log.txt``."""
    losses = []
    for line in (job_dir / "log.txt").read_text().splitlines():
        line = line.strip()
        if line.startswith("{") and "train_loss" in line:
            losses.append(float(json.loads(line)["train_loss"]))
    return losses
