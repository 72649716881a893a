"""The ``probe`` task: how much AU / emotion information do the learned features carry?

The paper's Tables 3-4 put a linear classifier (encoder frozen) or a fully fine-tuned one on
pooled image-encoder or Q-Former features, and report per-AU F1 with the average (BP4D,
RAF-AU) or emotion accuracy (AffectNet). Everything trains in LAVIS's stock runner loop:

- ``build_datasets`` builds the configured datasets and wraps each split: labels come from
  the records behind it (``labels.py``), items without a usable label are counted and left
  out (``data.py``).
- ``build_model`` wraps the configured model (anything with ``probe_features(image, source)
  -> [B, D]``) in a ``ProbeModel``. In linear mode it then encodes every wrapped dataset once
  with the frozen encoder, on the run device, through the feature cache (``features.py``):
  the runner trains the head on those features for the paper's 100-400 epochs.
- Evaluation scores logits against the labels each item carries and writes the Table 3/4
  files (``report.py``).

run_cfg keys: ``probe`` (mapping): ``target`` (``au`` | ``emotion``), ``source`` (``vision`` |
``qformer``), ``mode`` (``linear`` | ``finetune``), ``aus`` (list or ``facs.AU_SUBSETS`` name;
default: AUs with a positive label in train), ``emotions`` (default: those in train),
``threshold`` (0.5), ``row_name``, ``table_dir``, ``cache_dir``, ``feature_batch_size``,
``model_tag``, ``head`` (``linear`` | ``text_embedding``: KE2NT's head, emotions only) with its
``text_head`` settings (``text_head.py``). Epochs, lr, batch size, schedule, amp: the runner's
usual keys.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from lavis.common.dist_utils import is_main_process
from lavis.common.registry import registry
from lavis.tasks.base_task import BaseTask
from omegaconf import OmegaConf
from torch import nn

from lavis_ext import facs
from lavis_ext.errors import InputError
from lavis_ext.io import atomic_write_text
from lavis_ext.tasks.facial_captioning import ids_as_strings
from lavis_ext.tasks.probe import report as reports
from lavis_ext.tasks.probe.data import LabelledFeatures, LabelledImages
from lavis_ext.tasks.probe.features import (FeatureCache, broadcast_from_rank0,
                                            cached_features, eval_mode, weights_fingerprint)
from lavis_ext.tasks.probe.labels import TARGETS, LabelSpace, default_names, parse_aus
from lavis_ext.tasks.probe.model import MODES, SOURCES, ProbeModel
from lavis_ext.tasks.probe.text_head import (HEADS, QFORMER_TEXT, TextHeadConfig, build_head,
                                             itc_image_features)
from lavis_ext.tasks.references import records_for_dataset
from lavis_ext.tasks.run import RunBoundTask

logger = logging.getLogger(__name__)


@registry.register_task("probe")
class ProbeTask(RunBoundTask, BaseTask):
    def __init__(self, target: str = "au", source: str = "qformer", mode: str = "linear", *,
                 aus: Any = None, emotions: Sequence[str] | None = None,
                 threshold: float = 0.5, row_name: str | None = None,
                 table_dir: str | None = None, cache_dir: str | None = None,
                 feature_batch_size: int = 64, num_workers: int = 0,
                 device: str | None = None, model_tag: str = "", head: str = "linear",
                 text_head: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for value, allowed, key in ((target, TARGETS, "target"), (source, SOURCES, "source"),
                                    (mode, MODES, "mode"), (head, HEADS, "head")):
            if value not in allowed:
                raise InputError(f"run.probe.{key} must be one of {allowed}, got {value!r}")
        if head == "text_embedding" and target != "emotion":
            raise InputError("run.probe.head: 'text_embedding' matches images with one text per "
                             f"emotion; it needs run.probe.target: emotion, not {target!r}")
        if text_head is not None and head != "text_embedding":
            raise InputError("run.probe.text_head is set but run.probe.head is "
                             f"{head!r}; set head: text_embedding or drop text_head")
        self.head = head
        self.text_head = TextHeadConfig.parse(text_head) if head == "text_embedding" else None
        self.zero_shot = bool(self.text_head and self.text_head.zero_shot)
        if self.zero_shot and (source, mode) != ("qformer", "linear"):
            raise InputError("run.probe.text_head.zero_shot matches the Q-Former's ITC query "
                             "projections with its text embeddings: it needs run.probe.source: "
                             f"qformer and mode: linear, not {source!r} and {mode!r}")
        self.target, self.source, self.mode = target, source, mode
        self.aus = parse_aus(aus)
        self.emotions = [facs.canonical_emotion(e) for e in emotions] if emotions else None
        self.threshold = float(threshold)
        self.row_name = row_name or (f"{source} ({mode})" if head == "linear"
                                     else f"{source} ({mode}, text head)")
        self.table_dir, self.cache_dir = table_dir, cache_dir
        self.feature_batch_size, self.num_workers = int(feature_batch_size), int(num_workers)
        self.device = device
        self.model_tag = model_tag
        self.labels: LabelSpace | None = None
        self.wrapped: list[LabelledFeatures | LabelledImages] = []
        self._transforms: dict[str, Any] = {}  # dataset name -> deterministic image transform
        self._eval_dataset: Any = None

    @classmethod
    def setup_task(cls, cfg: Any = None, **kwargs: Any) -> "ProbeTask":
        run_cfg = cfg.run_cfg
        probe = run_cfg.get("probe") or {}
        probe = OmegaConf.to_container(probe, resolve=True) if OmegaConf.is_config(probe) \
            else dict(probe)
        model_cfg = cfg.model_cfg
        checkpoint = (model_cfg.get("finetuned") if model_cfg.get("load_finetuned")
                      else model_cfg.get("pretrained")) or ""
        stamp = ""
        if checkpoint and os.path.isfile(checkpoint):
            st = os.stat(checkpoint)
            stamp = f"{st.st_size}:{int(st.st_mtime)}"
        probe.setdefault("model_tag", f"{model_cfg.get('arch')}:{model_cfg.get('model_type')}:"
                                      f"{checkpoint}:{stamp}")
        probe.setdefault("table_dir", run_cfg.get("output_dir"))
        if probe.get("mode", "linear") == "linear" and run_cfg.get("output_dir"):
            probe.setdefault("cache_dir", os.path.join(run_cfg.output_dir, "probe_features"))
        probe.setdefault("feature_batch_size", run_cfg.get("batch_size_eval", 64))
        probe.setdefault("num_workers", run_cfg.get("num_workers", 0))
        probe.setdefault("device", run_cfg.get("device"))
        unknown = set(probe) - set(inspect.signature(cls.__init__).parameters) - {"self"}
        if unknown:
            raise InputError(f"run.probe: unknown key(s) {sorted(unknown)}")
        task = cls(**probe)
        if task.zero_shot and not run_cfg.get("evaluate"):
            raise InputError("run.probe.text_head.zero_shot trains nothing: set run.evaluate: "
                             "True, so the runner only scores the test splits")
        return task

    # --- data and labels -------------------------------------------------------------------
    def build_datasets(self, cfg: Any) -> dict[str, dict[str, Any]]:
        """The configured datasets, each split wrapped with its probe labels."""
        datasets, transforms = {}, {}
        if not cfg.datasets_cfg:
            raise InputError("the probe task needs at least one dataset under 'datasets'")
        for name in cfg.datasets_cfg:
            dataset_cfg = cfg.datasets_cfg[name]
            builder_cls = registry.get_builder_class(name)
            if builder_cls is None:
                raise InputError(f"datasets.{name}: no dataset builder is registered by that name")
            builder = builder_cls(dataset_cfg)
            datasets[name] = builder.build_datasets()
            processors = getattr(builder, "vis_processors", None) or {}
            eval_cfg = (dataset_cfg.get("vis_processor") or {}).get("eval")
            transforms[name] = (processors.get("eval"),
                                OmegaConf.to_container(eval_cfg) if OmegaConf.is_config(eval_cfg)
                                else eval_cfg)
        return self.wrap_datasets(datasets, transforms)

    def wrap_datasets(self, datasets: Mapping[str, Mapping[str, Any]],
                      transforms: Mapping[str, tuple[Any, Any]] | None = None
                      ) -> dict[str, dict[str, Any]]:
        """Label every split from its records; the class list comes from the train splits.

        ``transforms``: per dataset name, (the eval image transform, its config) used to
        encode train images in linear mode, so cached features are not one random crop.
        """
        self._transforms = dict(transforms or {})
        items = {name: {split: self._items(ds, f"{name}/{split}") for split, ds in by.items()}
                 for name, by in datasets.items()}
        train = [r for by in items.values() if "train" in by for r in by["train"][1] if r]
        if not any("train" in by for by in datasets.values()):
            raise InputError("the probe task needs a 'train' split to fit its classifier")
        names = self.aus if self.target == "au" else self.emotions
        self.labels = LabelSpace(self.target, tuple(names if names is not None
                                                    else default_names(self.target, train)))
        wrapper = LabelledFeatures if self.mode == "linear" else LabelledImages
        self.wrapped = []
        out: dict[str, dict[str, Any]] = {}
        for name, by_split in datasets.items():
            for split, dataset in by_split.items():
                image_ids, records = items[name][split]
                first: dict[str, int] = {}
                for position, image_id in enumerate(image_ids):
                    first.setdefault(image_id, position)
                candidates = sorted(first.values())
                encoded = self.labels.encode([records[p] for p in candidates])
                encoded.positions = [candidates[i] for i in encoded.positions]
                if len(candidates) < len(image_ids):
                    encoded.skipped["repeated image id"] += len(image_ids) - len(candidates)
                wrapped = wrapper(name, split, image_ids, encoded, dataset)
                if split == "train" and not len(wrapped):
                    raise InputError(f"{name}/train: no item has a usable {self.target} label "
                                     f"for classes {list(self.labels.names)} (skipped: "
                                     f"{dict(encoded.skipped)})")
                if encoded.skipped:
                    logger.info("probe %s/%s: %d items kept, skipped %s", name, split,
                                len(wrapped), dict(encoded.skipped))
                out.setdefault(name, {})[split] = wrapped
                self.wrapped.append(wrapped)
        return out

    @staticmethod
    def _items(dataset: Any, where: str) -> tuple[list[str], list[Mapping[str, Any] | None]]:
        """The image id and record of every item, in dataset order, without reading images."""
        annotation = getattr(dataset, "annotation", None)
        if not isinstance(annotation, list) or len(annotation) != len(dataset):
            raise InputError(f"{where}: the probe needs datasets whose 'annotation' list has one "
                             f"entry per item (LAVIS's BaseDataset convention); "
                             f"{type(dataset).__name__} has none")
        records = records_for_dataset(dataset)
        image_ids = [str(a["image_id"]) for a in annotation]
        return image_ids, [records.get(i) for i in image_ids]

    # --- model -----------------------------------------------------------------------------
    def build_model(self, cfg: Any) -> ProbeModel:
        return self.wrap_model(super().build_model(cfg))

    def wrap_model(self, encoder: nn.Module) -> ProbeModel:
        """The probe around ``encoder``; in linear mode, every wrapped dataset encoded too."""
        if self.labels is None:
            raise RuntimeError("build_datasets (or wrap_datasets) must run before the model is "
                               "wrapped: the head's size comes from the train labels")
        if not hasattr(encoder, "probe_features"):
            raise TypeError(f"{type(encoder).__name__} has no probe_features(image, source); "
                            "the probe task needs one")
        device = torch.device(self.device) if self.device else \
            next(iter(encoder.parameters())).device
        encoder = encoder.to(device)
        sample = self._sample_images(device)
        with torch.no_grad(), eval_mode(encoder):
            dim = encoder.probe_features(sample, self.source).shape[-1]
        head, extra = None, {}
        if self.text_head is not None:
            identity: list[Any] = []
            if self.text_head.encoder_name() == QFORMER_TEXT:  # the text branch is the model's
                identity = [self.model_tag, weights_fingerprint(encoder)]
            head = build_head(self.text_head, dim, self.labels.names, cache_dir=self.cache_dir,
                              model=encoder, identity=identity)
        if self.zero_shot:
            if torch.distributed.is_available() and torch.distributed.is_initialized() \
                    and torch.distributed.get_world_size() > 1:
                raise InputError("run.probe.text_head.zero_shot runs in one process: it trains "
                                 "nothing for DDP to share; launch train.py without "
                                 "torch.distributed.run")
            extra = {"features_fn": lambda image: itc_image_features(encoder, image),
                     "standardise": False}
        model = ProbeModel(encoder, dim, len(self.labels.names), source=self.source,
                           mode=self.mode, target=self.target, head=head, **extra).to(device)
        if self.mode == "linear":
            self._encode_all(model, device)
        else:
            self._freeze_unreached(model, sample)
        return model

    def _sample_images(self, device: torch.device) -> torch.Tensor:
        train = next(w for w in self.wrapped if w.split == "train")
        images = []
        for position in train.positions[:16]:
            item = train.images[position]
            if item is not None:
                images.append(item["image"])
            if len(images) == 2:
                return torch.stack(images).to(device)
        raise InputError(f"{train.name}/train: fewer than 2 readable images among its first 16 "
                         "labelled items")

    def _freeze_unreached(self, model: ProbeModel, sample: torch.Tensor) -> None:
        """Freeze trainable encoder weights the probe features do not depend on.

        They would get no gradient anyway; DDP refuses to train with such parameters, and
        checkpoints would carry them for nothing.
        """
        with torch.enable_grad(), eval_mode(model.encoder):
            model.features(sample).sum().backward()
        frozen = 0
        for param in model.encoder.parameters():
            if param.requires_grad and param.grad is None:
                param.requires_grad_(False)
                frozen += param.numel()
            param.grad = None
        if frozen:
            logger.info("probe finetune: %d encoder weights do not reach the %s features and "
                        "stay frozen", frozen, self.source)

    def _encode_all(self, model: ProbeModel, device: torch.device) -> None:
        cache = FeatureCache(self.cache_dir) if self.cache_dir else None
        broadcast_from_rank0(model.encoder)
        fingerprint = weights_fingerprint(model.encoder)
        source = f"{self.source}-itc" if self.zero_shot else self.source
        for wrapped in self.wrapped:
            if self.zero_shot and wrapped.split == "train":
                continue  # nothing is trained: only the evaluated splits need features
            transform, transform_cfg = self._transforms.get(wrapped.name, (None, None))
            images = wrapped.images
            original = getattr(images, "vis_processor", None)
            swap = wrapped.split == "train" and transform is not None and original is not None
            if wrapped.split == "train" and not swap and original is not None:
                logger.warning("%s/train: no eval image transform known; train features use the "
                               "training transform", wrapped.name)
            key = [self.model_tag, fingerprint, wrapped.name, wrapped.split, source,
                   transform_cfg if swap or wrapped.split != "train" else "train-transform",
                   wrapped.image_ids]
            path = cache.path(f"{wrapped.name}_{wrapped.split}_{source}", key) \
                if cache else None
            if swap:
                images.vis_processor = transform
            try:
                with eval_mode(model.encoder):
                    kept, features = cached_features(
                        model.features, images, wrapped.positions, wrapped.image_ids,
                        cache=cache, path=path, batch_size=self.feature_batch_size,
                        num_workers=self.num_workers, device=device)
            finally:
                if swap:
                    images.vis_processor = original
            wrapped.attach(kept, features)

    # --- evaluation ------------------------------------------------------------------------
    def before_evaluation(self, model: Any, dataset: Any, **kwargs: Any) -> None:
        self._eval_dataset = dataset

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        inputs = {k: samples[k] for k in ("features", "image") if k in samples}
        logits = model(inputs)["logits"].detach().float().cpu()
        targets = samples["probe_target"].cpu().tolist()
        masks = samples["probe_mask"].cpu().tolist()
        return [{"image_id": i, "logits": row.tolist(), "target": t, "mask": m}
                for i, row, t, m in zip(ids_as_strings(samples["image_id"]), logits, targets,
                                        masks)]

    def after_evaluation(self, val_result: list, split_name: str, epoch: Any,
                         **kwargs: Any) -> dict[str, Any] | None:
        result_dir = registry.get_path("result_dir") or self.table_dir or "results"
        os.makedirs(result_dir, exist_ok=True)
        result_file = self.save_result(val_result, result_dir,
                                       f"probe_{split_name}_epoch{epoch}", "image_id")
        if not is_main_process():
            return None
        merged = json.loads(Path(result_file).read_text(encoding="utf-8"))
        logits = np.array([r["logits"] for r in merged], dtype=np.float64)
        targets = np.array([r["target"] for r in merged])
        masks = np.array([r["mask"] for r in merged], dtype=bool)
        metrics = reports.score(self.target, self.labels.names, logits, targets, masks,
                                self.threshold)
        dataset = self._eval_dataset
        report = {"split": split_name, "epoch": epoch,
                  "dataset": getattr(dataset, "name", "dataset"), "row": self.row_name,
                  "target": self.target, "source": self.source, "mode": self.mode,
                  "head": "zero_shot" if self.zero_shot else self.head,
                  "classes": [str(n) for n in self.labels.names], **metrics,
                  "skipped": dict(getattr(dataset, "skipped", {}))}
        atomic_write_text(os.path.join(result_dir,
                                       f"probe_{split_name}_epoch{epoch}_scores.json"),
                          json.dumps(report, indent=1) + "\n")
        reports.write_tables(report, self.table_dir or result_dir)
        flat = {k: v for k, v in metrics.items() if isinstance(v, float)}
        flat["agg_metrics"] = metrics["agg_metrics"]
        return flat
