"""The ``probe`` task: how much AU / emotion information do the learned features carry?

The paper's Tables 3-4 put a linear classifier (encoder frozen) or a fully fine-tuned one on
pooled image-encoder or Q-Former features, and report per-AU F1 with the average (BP4D,
RAF-AU) or emotion accuracy (AffectNet). This task does that inside the stock LAVIS runner:

- ``build_model`` wraps the configured model (anything with
  ``probe_features(image, source) -> [B, D]``) in a ``ProbeModel`` with a linear head; in
  linear mode the encoder's parameters are frozen, so the runner's optimizer sees the head only.
- Labels come from the records behind each dataset (by ``image_id``), not from the samples.
- Linear mode extracts features once per (model weights, checkpoint, dataset, split, source)
  and caches them on disk; every epoch then trains the head on the cached features, which
  makes the paper's 100-400 epochs cheap. Train features are extracted with the split's
  deterministic (eval) image transform when the builder made one, since a cache of one random
  augmentation would be neither augmentation nor a fair clean view.
- Full fine-tuning runs the stock LAVIS training loop; gradients flow into the encoder.
- Evaluation writes per-split JSON, the Table 3/4 layout as markdown and CSV (one row per
  ``row_name``, updated in place so several models share one table) and a per-AU bar chart.

run_cfg keys: ``probe`` (mapping): ``target`` (``au`` | ``emotion``), ``source`` (``vision`` |
``qformer``), ``mode`` (``linear`` | ``finetune``), ``aus`` (list or ``facs.AU_SUBSETS``
name; default: AUs with a positive label in train), ``emotions`` (default: those in train),
``threshold`` (0.5), ``row_name``, ``table_dir``, ``cache_dir``, ``feature_batch_size``,
``model_tag``. Epochs, lr, batch size, schedule: the runner's usual keys.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from lavis.common.dist_utils import is_dist_avail_and_initialized, is_main_process
from lavis.common.registry import registry
from lavis.tasks.base_task import BaseTask
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lavis_ext import facs
from lavis_ext.data.records import atomic_write_text
from lavis_ext.metrics.classification import accuracy, macro_f1, mean_defined, multilabel_f1
from lavis_ext.tasks.facial_captioning import ids_as_strings, model_on_cuda
from lavis_ext.tasks.references import annotation_storage, records_for_dataset

TARGETS = ("au", "emotion")
SOURCES = ("vision", "qformer")
MODES = ("linear", "finetune")


class ProbeModel(nn.Module):
    """An encoder with ``probe_features`` and a linear head; the loss the runner trains."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_outputs: int, *,
                 source: str, mode: str, target: str) -> None:
        super().__init__()
        self.encoder = encoder
        # MAE's linear-probe recipe: standardise features (BatchNorm without affine) so one
        # learning rate suits encoders whose feature scales differ by orders of magnitude.
        self.norm = nn.BatchNorm1d(feature_dim, affine=False)
        self.head = nn.Linear(feature_dim, num_outputs)
        self.source, self.mode, self.target = source, mode, target
        if mode == "linear":
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        """Where the head lives; LAVIS's runner compares it with the run device."""
        return self.head.weight.device

    def features(self, image: torch.Tensor) -> torch.Tensor:
        if self.mode == "linear":
            with torch.no_grad():
                return self.encoder.probe_features(image, self.source).float()
        method = self.encoder.probe_features
        # A probe_features decorated with @torch.no_grad() keeps the undecorated function in
        # __wrapped__ (functools.wraps); fine-tuning needs that one.
        inner = getattr(method, "__wrapped__", None)
        features = (inner(self.encoder, image, self.source) if inner is not None
                    else method(image, self.source)).float()
        if torch.is_grad_enabled() and not features.requires_grad:
            raise RuntimeError("probe mode 'finetune' needs gradients through "
                               f"{type(self.encoder).__name__}.probe_features, but it returned "
                               "a tensor without grad (does it run under torch.no_grad?)")
        return features

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        features = samples["features"] if "features" in samples \
            else self.features(samples["image"])
        logits = self.head(self.norm(features.to(self.head.weight.device)))
        out = {"logits": logits}
        if "probe_target" in samples:
            target = samples["probe_target"].to(logits.device)
            if self.target == "au":
                mask = samples["probe_mask"].to(logits.device).float()
                losses = nn.functional.binary_cross_entropy_with_logits(
                    logits, target.float(), reduction="none")
                out["loss"] = (losses * mask).sum() / mask.sum().clamp(min=1.0)
            else:
                out["loss"] = nn.functional.cross_entropy(logits, target.long())
        return out


class LabelTable:
    """Labels by image_id for the probe target, from records; skips are counted."""

    def __init__(self, target: str, records: Mapping[str, Mapping[str, Any]],
                 names: Sequence[Any]) -> None:
        self.target, self.names = target, list(names)
        self.values: dict[str, tuple[np.ndarray, np.ndarray] | int] = {}
        self.skipped: dict[str, int] = {}
        index = {n: i for i, n in enumerate(self.names)}
        for image_id, record in records.items():
            if target == "au":
                y = np.zeros(len(self.names), dtype=np.float32)
                m = np.zeros(len(self.names), dtype=bool)
                for k, au in enumerate(self.names):
                    value = (record.get("aus") or {}).get(str(au))
                    if value is not None:
                        y[k], m[k] = float(value), True
                if m.any():
                    self.values[image_id] = (y, m)
                else:
                    self._skip("none of the probed AUs coded")
            else:
                labels = {facs.canonical_emotion(e) for e in record.get("emotions") or []}
                if len(labels) != 1:
                    self._skip("no emotion label" if not labels else "more than one emotion")
                elif next(iter(labels)) not in index:
                    self._skip("emotion outside the probed classes")
                else:
                    self.values[image_id] = index[next(iter(labels))]

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def batch(self, image_ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Targets, mask and the positions of the ids that have labels."""
        keep = [i for i, image_id in enumerate(image_ids) if image_id in self.values]
        if self.target == "au":
            ys = [self.values[image_ids[i]][0] for i in keep]
            ms = [self.values[image_ids[i]][1] for i in keep]
            width = len(self.names)
            y = torch.from_numpy(np.stack(ys)) if ys else torch.zeros(0, width)
            m = torch.from_numpy(np.stack(ms)) if ms else torch.zeros(0, width, dtype=torch.bool)
            return y, m, keep
        y = torch.tensor([self.values[image_ids[i]] for i in keep], dtype=torch.long)
        return y, torch.ones(len(keep), dtype=torch.bool), keep


def weights_fingerprint(model: nn.Module) -> str:
    """Cheap identity of a model's weights: names, shapes and a sample of values per tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if flat.numel() and flat.is_floating_point():
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
            digest.update(sample.tobytes())
            digest.update(np.float64(flat.double().sum().item()).tobytes())
    return digest.hexdigest()[:16]


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Frozen features come from the encoder in eval mode (no dropout, fixed norm stats)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _collate(dataset: Any):
    return getattr(dataset, "collater", None)


@registry.register_task("probe")
class ProbeTask(BaseTask):
    def __init__(self, target: str = "au", source: str = "qformer", mode: str = "linear", *,
                 aus: Any = None, emotions: Sequence[str] | None = None,
                 threshold: float = 0.5, row_name: str | None = None,
                 table_dir: str | None = None, cache_dir: str | None = None,
                 feature_batch_size: int = 64, train_batch_size: int = 64,
                 model_tag: str = "", seed: int = 0) -> None:
        super().__init__()
        for value, allowed, key in ((target, TARGETS, "target"), (source, SOURCES, "source"),
                                    (mode, MODES, "mode")):
            if value not in allowed:
                raise ValueError(f"run_cfg.probe.{key} must be one of {allowed}, got {value!r}")
        self.target, self.source, self.mode = target, source, mode
        if isinstance(aus, str):
            if aus.lower() not in facs.AU_SUBSETS:
                raise ValueError(f"run_cfg.probe.aus: {aus!r} is not one of "
                                 f"{sorted(facs.AU_SUBSETS)} or a list of AU numbers")
            aus = facs.AU_SUBSETS[aus.lower()]
        self.aus = [facs.au_name(a).number for a in aus] if aus is not None else None
        self.emotions = [facs.canonical_emotion(e) for e in emotions] if emotions else None
        self.threshold = threshold
        self.row_name = row_name or f"{source} ({mode})"
        self.table_dir, self.cache_dir = table_dir, cache_dir
        self.feature_batch_size, self.train_batch_size = feature_batch_size, train_batch_size
        self.model_tag, self.seed = model_tag, seed
        self.result_dir: str | None = None  # set to override the runner's result_dir
        self.labels: LabelTable | None = None
        self._datasets: dict[str, dict[str, Any]] = {}
        self._annotation_files: dict[int, list[str]] = {}
        self._where: dict[int, tuple[str, str]] = {}
        self._train_cache: tuple[list[str], torch.Tensor] | None = None
        # Linear mode: the encoder is frozen, so a dataset's features never change in a run.
        self._in_memory: dict[int, tuple[list[str], torch.Tensor]] = {}
        self._eval: tuple[Any, dict[str, Any]] | None = None

    @classmethod
    def setup_task(cls, cfg: Any = None, **kwargs: Any) -> "ProbeTask":
        run_cfg = cfg.run_cfg
        probe = dict(run_cfg.get("probe") or {})
        if "aus" in probe and probe["aus"] is not None and not isinstance(probe["aus"], str):
            probe["aus"] = list(probe["aus"])
        if probe.get("emotions") is not None:
            probe["emotions"] = list(probe["emotions"])
        model_cfg = cfg.model_cfg
        checkpoint = model_cfg.get("finetuned") or model_cfg.get("pretrained") or ""
        stamp = ""
        if checkpoint and os.path.isfile(checkpoint):
            st = os.stat(checkpoint)
            stamp = f"{st.st_size}:{int(st.st_mtime)}"
        probe.setdefault("model_tag", f"{model_cfg.get('arch')}:{model_cfg.get('model_type')}:"
                                      f"{checkpoint}:{stamp}")
        probe.setdefault("table_dir", run_cfg.get("output_dir"))
        if probe.get("mode", "linear") == "linear" and run_cfg.get("output_dir"):
            probe.setdefault("cache_dir", os.path.join(run_cfg.output_dir, "probe_features"))
        probe.setdefault("train_batch_size", run_cfg.get("batch_size_train", 64))
        probe.setdefault("seed", run_cfg.get("seed", 0))
        return cls(**probe)

    # --- data and labels -------------------------------------------------------------------
    def attach_datasets(self, datasets: Mapping[str, Mapping[str, Any]],
                        annotation_files: Mapping[int, list[str]] | None = None) -> None:
        """Remember datasets by name and split, and build the label table from train."""
        self._annotation_files.update(annotation_files or {})
        for name, by_split in datasets.items():
            self._datasets[name] = dict(by_split)
            for split, dataset in by_split.items():
                self._where[id(dataset)] = (name, split)
        train = {}
        for by_split in self._datasets.values():
            if "train" in by_split:
                train.update(records_for_dataset(by_split["train"], self._annotation_files))
        if not train:
            raise ValueError("the probe task needs a 'train' split to fit its classifier")
        self.labels = LabelTable(self.target, train, self._label_names(train))
        if not self.labels.values:
            raise ValueError(f"no train record has a usable {self.target} label "
                             f"(skipped: {self.labels.skipped})")
        if self.labels.skipped:
            logging.info("probe train labels: %d kept, skipped %s", len(self.labels.values),
                         self.labels.skipped)

    def _label_names(self, records: Mapping[str, Mapping[str, Any]]) -> list[Any]:
        if self.target == "au":
            if self.aus is not None:
                return self.aus
            positive = {int(a) for r in records.values()
                        for a, v in (r.get("aus") or {}).items() if v == 1}
            return sorted(positive)
        if self.emotions is not None:
            return self.emotions
        seen = {facs.canonical_emotion(e) for r in records.values()
                for e in r.get("emotions") or []}
        ordered = [e for e in facs.EMOTION_NAMES if e in seen]
        return ordered + sorted(seen - set(ordered))

    def build_datasets(self, cfg: Any) -> dict[str, Any]:
        datasets = super().build_datasets(cfg)
        files = {id(ds): annotation_storage(cfg.datasets_cfg[name], split)
                 for name, by_split in datasets.items() for split, ds in by_split.items()}
        self.attach_datasets(datasets, {k: v for k, v in files.items() if v})
        return datasets

    def build_model(self, cfg: Any) -> ProbeModel:
        return self.wrap_model(super().build_model(cfg))

    def wrap_model(self, encoder: nn.Module) -> ProbeModel:
        if self.labels is None:
            raise RuntimeError("attach_datasets (or build_datasets) must run before the model "
                               "is wrapped: the head's size comes from the train labels")
        if not hasattr(encoder, "probe_features"):
            raise TypeError(f"{type(encoder).__name__} has no probe_features(image, source); "
                            "the probe task needs one")
        dataset = next(by["train"] for by in self._datasets.values() if "train" in by)
        sample = next((dataset[i] for i in range(min(len(dataset), 16))
                       if dataset[i] is not None), None)
        if sample is None:
            raise ValueError("the probe's train dataset yielded no readable sample among its "
                             "first 16 items")
        device = next(iter(encoder.parameters())).device
        with torch.no_grad(), _eval_mode(encoder):
            dim = encoder.probe_features(sample["image"].unsqueeze(0).to(device),
                                         self.source).shape[-1]
        model = ProbeModel(encoder, dim, len(self.labels.names), source=self.source,
                           mode=self.mode, target=self.target)
        self._in_memory.clear()
        self._train_cache = None
        return model.to(device)

    # --- features --------------------------------------------------------------------------
    @contextmanager
    def _deterministic(self, dataset: Any) -> Iterator[None]:
        name, split = self._where.get(id(dataset), (None, None))
        others = [ds for s, ds in self._datasets.get(name, {}).items() if s != "train"]
        original = getattr(dataset, "vis_processor", None)
        replacement = next((getattr(ds, "vis_processor", None) for ds in others
                            if getattr(ds, "vis_processor", None) is not None), None)
        if split == "train" and original is not None and replacement is not None:
            dataset.vis_processor = replacement
        try:
            yield
        finally:
            if original is not None:
                dataset.vis_processor = original

    def _cache_file(self, model: ProbeModel, dataset: Any) -> Path | None:
        if not self.cache_dir:
            return None
        name, split = self._where.get(id(dataset), (type(dataset).__name__, "?"))
        key = json.dumps([self.model_tag, weights_fingerprint(model.encoder), name, split,
                          self.source, len(dataset)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return Path(self.cache_dir) / f"{name}_{split}_{self.source}_{digest}.pt"

    def dataset_features(self, model: ProbeModel, dataset: Any) -> tuple[list[str], torch.Tensor]:
        """Features of every image of a dataset (frozen encoder), from the disk cache if there."""
        remembered = self._in_memory.get(id(dataset))
        if remembered is not None:
            return remembered
        ids, features = self._extract_or_load(model, dataset)
        self._in_memory[id(dataset)] = (ids, features)
        return ids, features

    def _extract_or_load(self, model: ProbeModel, dataset: Any) -> tuple[list[str], torch.Tensor]:
        path = self._cache_file(model, dataset)
        if path is not None and path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            features = cached["features"]
            if len(cached["image_ids"]) == len(dataset) and features.ndim == 2 \
                    and features.shape[1] == model.head.in_features:
                return list(cached["image_ids"]), features
        device = model.head.weight.device
        ids: list[str] = []
        chunks: list[torch.Tensor] = []
        with self._deterministic(dataset), _eval_mode(model.encoder):
            loader = DataLoader(dataset, batch_size=self.feature_batch_size, shuffle=False,
                                collate_fn=_collate(dataset))
            for samples in tqdm(loader, desc="probe features", disable=not is_main_process()):
                chunks.append(model.features(samples["image"].to(device)).cpu())
                ids.extend(ids_as_strings(samples["image_id"]))
        features = torch.cat(chunks) if chunks else torch.zeros(0, model.head.in_features)
        if path is not None and is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"image_ids": ids, "features": features}, tmp)
            os.replace(tmp, path)
        return ids, features

    # --- training --------------------------------------------------------------------------
    def train_step(self, model: ProbeModel, samples: dict[str, Any]) -> torch.Tensor:
        ids = ids_as_strings(samples["image_id"])
        target, mask, keep = self.labels.batch(ids)
        if not keep:
            # No labelled image in this batch: a zero loss that still touches the graph.
            return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        batch = {"probe_target": target, "probe_mask": mask}
        if "features" in samples:
            batch["features"] = samples["features"][keep]
        else:
            batch["image"] = samples["image"][keep]
        return model(batch)["loss"]

    def train_epoch(self, epoch: int, model: Any, data_loader: Any, optimizer: Any,
                    lr_scheduler: Any, scaler: Any = None, cuda_enabled: bool = False,
                    log_freq: int = 50, accum_grad_iters: int = 1) -> dict[str, str]:
        if self.mode == "finetune":
            return super().train_epoch(epoch, model, data_loader, optimizer, lr_scheduler,
                                       scaler=scaler, cuda_enabled=cuda_enabled,
                                       log_freq=log_freq, accum_grad_iters=accum_grad_iters)
        probe = model.module if hasattr(model, "module") else model
        if self._train_cache is None:
            ids, feats = [], []
            for by_split in self._datasets.values():
                if "train" in by_split:
                    part_ids, part = self.dataset_features(probe, by_split["train"])
                    ids += part_ids
                    feats.append(part)
            self._train_cache = (ids, torch.cat(feats))
        ids, features = self._train_cache
        generator = torch.Generator().manual_seed(self.seed + int(epoch))
        order = torch.randperm(len(ids), generator=generator)
        iters = math.ceil(len(ids) / self.train_batch_size)
        model.train()
        total, count = 0.0, 0
        device = probe.head.weight.device
        for i in range(iters):
            chunk = order[i * self.train_batch_size:(i + 1) * self.train_batch_size]
            if len(chunk) < 2:
                continue  # batch statistics need two samples
            lr_scheduler.step(cur_epoch=epoch, cur_step=i)
            loss = self.train_step(model, {"image_id": [ids[j] for j in chunk.tolist()],
                                           "features": features[chunk].to(device)})
            loss.backward()
            if (i + 1) % accum_grad_iters == 0 or i + 1 == iters:
                optimizer.step()
                optimizer.zero_grad()
            total += loss.item()
            count += 1
        return {"loss": f"{total / max(count, 1):.3f}",
                "lr": f"{optimizer.param_groups[0]['lr']:.6f}"}

    # --- evaluation ------------------------------------------------------------------------
    def before_evaluation(self, model: Any, dataset: Any, **kwargs: Any) -> None:
        self._eval = (dataset, records_for_dataset(dataset, self._annotation_files))

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        logits = model(samples)["logits"].detach().float().cpu()
        return [{"image_id": i, "logits": row.tolist()}
                for i, row in zip(ids_as_strings(samples["image_id"]), logits)]

    def evaluation(self, model: Any, data_loader: Any, cuda_enabled: bool = True) -> list:
        probe = model.module if hasattr(model, "module") else model
        probe.eval()
        results: list[dict[str, Any]] = []
        with torch.no_grad():
            if self.mode == "linear" and self._eval is not None:
                ids, features = self.dataset_features(probe, self._eval[0])
                for start in range(0, len(ids), 1024):
                    results += self.valid_step(probe, {
                        "image_id": ids[start:start + 1024],
                        "features": features[start:start + 1024]})
            else:
                device = probe.head.weight.device
                for samples in tqdm(data_loader, desc="probe evaluation",
                                    disable=not is_main_process()):
                    results += self.valid_step(probe, {"image_id": samples["image_id"],
                                                       "image": samples["image"].to(device)})
        if is_dist_avail_and_initialized():
            dist.barrier()
        return results

    def after_evaluation(self, val_result: list, split_name: str, epoch: Any,
                         **kwargs: Any) -> dict[str, Any] | None:
        result_dir = self.result_dir or registry.get_path("result_dir") or self.table_dir \
            or "results"
        os.makedirs(result_dir, exist_ok=True)
        result_file = self.save_result(val_result, result_dir,
                                       f"probe_{split_name}_epoch{epoch}", "image_id")
        if not is_main_process():
            return None
        merged = json.loads(Path(result_file).read_text(encoding="utf-8"))
        records = self._eval[1] if self._eval else {}
        metrics = self.score(merged, records)
        name = self._where.get(id(self._eval[0]), ("dataset", split_name))[0] \
            if self._eval else "dataset"
        report = {"split": split_name, "epoch": epoch, "dataset": name, "row": self.row_name,
                  "target": self.target, "source": self.source, "mode": self.mode,
                  "classes": [str(n) for n in self.labels.names], **metrics}
        atomic_write_text(os.path.join(result_dir, f"probe_{split_name}_epoch{epoch}_scores.json"),
                          json.dumps(report, indent=1) + "\n")
        self.write_tables(report, Path(self.table_dir or result_dir))
        flat = {k: v for k, v in metrics.items() if isinstance(v, float)}
        flat["agg_metrics"] = metrics["agg_metrics"]
        return flat

    def score(self, results: Sequence[Mapping[str, Any]],
              records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Per-AU F1 + average, or accuracy + macro-F1, of logits against the records' labels."""
        table = LabelTable(self.target, records, self.labels.names)
        ids = [str(r["image_id"]) for r in results]
        missing = sum(1 for i in ids if i not in records)
        target, mask, keep = table.batch(ids)
        skipped = dict(table.skipped)
        if missing:
            skipped["image id not in the records"] = missing
        if not keep:
            raise ValueError(f"no evaluated image has a usable {self.target} label "
                             f"(skipped: {skipped})")
        logits = torch.tensor([results[k]["logits"] for k in keep])
        if self.target == "au":
            predicted = (torch.sigmoid(logits) >= self.threshold).numpy()
            per = multilabel_f1(target.numpy(), predicted, mask.numpy())
            average = mean_defined(per)
            return {"au_f1": {str(a): f for a, f in zip(self.labels.names, per)},
                    "au_f1_avg": average, "agg_metrics": float(average or 0.0),
                    "n_scored": len(keep), "skipped": skipped}
        predicted = logits.argmax(dim=1).numpy()
        acc = accuracy(target.numpy(), predicted)
        return {"accuracy": acc, "macro_f1": macro_f1(target.numpy(), predicted,
                                                      len(self.labels.names)),
                "agg_metrics": acc, "n_scored": len(keep), "skipped": skipped}

    # --- reports ---------------------------------------------------------------------------
    def write_tables(self, report: Mapping[str, Any], table_dir: Path) -> None:
        """Upsert this run's row into the Table 3/4 style CSV and markdown; draw the chart."""
        table_dir.mkdir(parents=True, exist_ok=True)
        stem = table_dir / f"probe_{self.target}_{report['dataset']}_{report['split']}"
        if self.target == "au":
            columns = [f"AU{a}" for a in self.labels.names] + ["Avg."]
            values = [report["au_f1"][str(a)] for a in self.labels.names] + [report["au_f1_avg"]]
        else:
            columns = ["Accuracy", "Macro-F1"]
            values = [report["accuracy"], report["macro_f1"]]
        cells = ["" if v is None else f"{100 * v:.1f}" for v in values]
        rows: dict[str, list[str]] = {}
        csv_path = stem.with_suffix(".csv")
        if csv_path.is_file():
            with csv_path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header == ["Features", *columns]:
                    rows = {row[0]: row[1:] for row in reader if row}
        rows[self.row_name] = cells
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["Features", *columns])
        for name, row in rows.items():
            writer.writerow([name, *row])
        atomic_write_text(csv_path, out.getvalue())
        title = (f"{'AU detection F1' if self.target == 'au' else 'Emotion classification'} "
                 f"(%), {report['dataset']} {report['split']}, probe: {self.mode}")
        md = [f"**{title}**", "", "| Features | " + " | ".join(columns) + " |",
              "|---|" + "---|" * len(columns)]
        md += [f"| {name} | " + " | ".join(c or "-" for c in row) + " |"
               for name, row in rows.items()]
        atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
        if self.target == "au":
            self._bar_chart(report, stem.with_suffix(".png"))

    def _bar_chart(self, report: Mapping[str, Any], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [f"AU{a}" for a in self.labels.names]
        values = [100 * (report["au_f1"][str(a)] or 0.0) for a in self.labels.names]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.2), dpi=120)
        ax.bar(names, values, color="#4C72B0")
        if report["au_f1_avg"] is not None:
            ax.axhline(100 * report["au_f1_avg"], color="#C44E52", linestyle="--",
                       label=f"average {100 * report['au_f1_avg']:.1f}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("F1 (%)")
        ax.set_title(f"{self.row_name}: {report['dataset']} {report['split']}", fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, path)


class _CosineByEpoch:
    """The LAVIS scheduler interface (``step(cur_epoch, cur_step)``) for ``run_probe``."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_epoch: int, init_lr: float,
                 min_lr: float = 0.0) -> None:
        self.optimizer, self.max_epoch = optimizer, max(1, max_epoch)
        self.init_lr, self.min_lr = init_lr, min_lr

    def step(self, cur_epoch: int, cur_step: int) -> None:
        lr = self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (
            1 + math.cos(math.pi * cur_epoch / self.max_epoch))
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def run_probe(task: ProbeTask, encoder: nn.Module, datasets: Mapping[str, Mapping[str, Any]],
              *, epochs: int, lr: float = 1e-3, weight_decay: float = 0.0,
              output_dir: str | os.PathLike, eval_splits: Sequence[str] = ("val", "test"),
              annotation_files: Mapping[int, list[str]] | None = None) -> dict[str, Any]:
    """Fit and score a probe without the LAVIS runner (AdamW, cosine lr by epoch).

    The same task methods run as under the runner; results, tables and the chart go to
    ``output_dir``. Returns ``{split: metrics}`` for the evaluated splits.
    """
    task.result_dir = str(output_dir)
    task.table_dir = task.table_dir or str(output_dir)
    task.attach_datasets(datasets, annotation_files)
    model = task.wrap_model(encoder)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    scheduler = _CosineByEpoch(optimizer, epochs, lr)
    train_parts = [by["train"] for by in task._datasets.values() if "train" in by]
    loader = None
    if task.mode == "finetune":
        train = train_parts[0] if len(train_parts) == 1 else torch.utils.data.ConcatDataset(
            train_parts)
        loader = DataLoader(train, batch_size=task.train_batch_size, shuffle=True,
                            collate_fn=_collate(train_parts[0]),
                            generator=torch.Generator().manual_seed(task.seed))
    cuda = model_on_cuda(model)
    for epoch in range(epochs):
        stats = task.train_epoch(epoch, model, loader, optimizer, scheduler, cuda_enabled=cuda,
                                 log_freq=10 ** 9)
        logging.info("probe epoch %d: %s", epoch, stats)
    results: dict[str, Any] = {}
    for name, by_split in task._datasets.items():
        for split in eval_splits:
            if split not in by_split:
                continue
            dataset = by_split[split]
            task.before_evaluation(model, dataset)
            eval_loader = DataLoader(dataset, batch_size=task.feature_batch_size, shuffle=False,
                                     collate_fn=_collate(dataset))
            outputs = task.evaluation(model, eval_loader, cuda_enabled=cuda)
            results[split if len(task._datasets) == 1 else f"{name}/{split}"] = \
                task.after_evaluation(outputs, split, "final")
    return results
