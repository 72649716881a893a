"""The ``facial_captioning`` task: train like LAVIS captioning, evaluate the way the paper does.

LAVIS's ``captioning`` task downloads COCO's Karpathy ground truth, casts image ids to int
and scores CIDEr/BLEU. Here evaluation generates a caption per image, scores it against all
of the image's references keeping the best (METEOR, ROUGE-L, embedding similarity), reads
the AUs and emotions it names back from the text (AU F1, emotion accuracy), writes one
results JSON per split and epoch, and returns ``agg_metrics`` from ``run_cfg.select_metric``
so the stock runner keeps the best checkpoint.

run_cfg keys read here (all optional except what generation needs):
``num_beams``, ``max_len``, ``min_len``, ``repetition_penalty``, ``length_penalty``,
``no_repeat_ngram_size``, ``top_p``, ``temperature`` (passed to ``model.generate`` only when
set); ``select_metric`` (default ``meteor``); ``embedding_encoder`` (``minilm``, ``none``,
``openai[:model]`` or a mapping, see ``lavis_ext.metrics.embeddings.build_encoder``);
``meteor`` (default true); ``au_subset`` (list of AU numbers or a ``facs.AU_SUBSETS`` name);
``report_metric`` (default true); ``ref_kinds`` (score only against these caption kinds,
e.g. ``[au-rule, au-llm]`` for the paper's Table 2; default every caption); ``report_by``
(``dataset``: one result per dataset besides the pooled one); ``score_protocol`` (``best``,
the paper's and the default, or ``coco``; see ``lavis_ext.metrics.captioning``);
``text_format`` (``caption``, the default: AUs and emotions read from the whole caption; or
``cot``: ExpLLM's three parts, AUs from the key observations, the emotion from the
conclusion, see ``lavis_ext.metrics.cot``). ``select_metric`` reads the pooled result.

ATT-COS (docs/explain.md): when the split's batches carry ``au_cue_map`` (the eval processor
``face_image_eval_au_cue``), the Q-Former's cross-attention is read during generation and each
image with ``au_cue_mask`` 1 gets the cosine between its mean attention and its labelled AUs'
heatmap, computed as ``explain --ann`` computes it (``explain.att_cos``); the metrics then
hold their mean, ``att_cos``, and ``att_cos_images``, how many images were scored. Nothing is
captured or reported otherwise.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from lavis.common.dist_utils import is_dist_avail_and_initialized, is_main_process
from lavis.common.registry import registry
from lavis.tasks.base_task import BaseTask
from tqdm import tqdm

from lavis_ext import facs
from lavis_ext.data.records import atomic_write_text
from lavis_ext.errors import InputError
from lavis_ext.metrics.embeddings import build_encoder
from lavis_ext.metrics.captioning import DEFAULT_PROTOCOL, check_protocol
from lavis_ext.metrics.evaluate import (CAPTION_METRICS, REPORT_BY,
                                        evaluate_captions, format_table)
from lavis_ext.tasks.references import annotation_storage, records_for_dataset
from lavis_ext.tasks.run import RunBoundTask

# run_cfg key -> keyword of ``generate``.
GENERATION_KEYS = {
    "num_beams": "num_beams", "max_len": "max_length", "min_len": "min_length",
    "repetition_penalty": "repetition_penalty", "length_penalty": "length_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size", "top_p": "top_p",
    "temperature": "temperature",
}
SELECTABLE_METRICS = (*CAPTION_METRICS, "au_f1_macro", "emotion_accuracy")
TEXT_FORMATS = ("caption", "cot")  # how generated text is read for recognition


def model_on_cuda(model: torch.nn.Module) -> bool:
    """Whether the model's parameters live on a GPU (LAVIS assumes so when moving batches)."""
    parameter = next(iter(model.parameters()), None)
    return parameter is not None and parameter.is_cuda


def ids_as_strings(image_ids: Any) -> list[str]:
    if isinstance(image_ids, torch.Tensor):
        return [str(i) for i in image_ids.tolist()]
    return [str(i) for i in image_ids]


def _au_subset(value: Any) -> tuple[int, ...] | None:
    return facs.parse_au_subset(value, "run_cfg.au_subset")


def batch_att_cos(model: torch.nn.Module, probabilities: torch.Tensor,
                  cue_maps: torch.Tensor, masks: torch.Tensor | None) -> list[float | None]:
    """Per image, ATT-COS of its mean cross-attention against its ``au_cue_map``, by the
    one definition ``explain --ann`` uses (``explain.att_cos``: the map averaged onto the
    patch grid, then the cosine); None where ``au_cue_mask`` is 0 or the map is empty.
    ``probabilities``: a capture of one Q-Former pass over the batch (generation runs the
    Q-Former once per image, before any beam is expanded)."""
    from lavis_ext.describe.explain import att_cos
    from lavis_ext.models.attention import to_maps, token_grid, visual_encoder_of

    count = int(cue_maps.shape[0])
    if probabilities.shape[1] != count:
        raise RuntimeError(f"ATT-COS: the Q-Former's cross-attention was recorded for "
                           f"{probabilities.shape[1]} images during generation, but the batch "
                           f"has {count} au_cue_map maps; {type(model).__name__}.generate must "
                           "run the Q-Former once over the batch")
    maps = to_maps(probabilities, token_grid(probabilities.shape[-1], visual_encoder_of(model)))
    targets = cue_maps.detach().float().cpu().numpy()
    keep = [True] * count if masks is None else \
        [bool(v > 0) for v in torch.as_tensor(masks).reshape(-1).tolist()]
    return [att_cos(m, t) if k else None for m, t, k in zip(maps, targets, keep)]


def add_att_cos(scores: dict[str, Any], predictions: list[Mapping[str, Any]],
                report_by: str | None, where: str) -> None:
    """Put the predictions' per-image ``att_cos`` into the scores: per sample, and the mean
    with its image count in the pooled metrics and (with ``report_by``) each group's. Does
    nothing when no prediction carries the field (no maps in the split)."""
    values = {str(p["image_id"]): p["att_cos"] for p in predictions if "att_cos" in p}
    if not values:
        return
    samples = scores.get("per_sample", [])
    for sample in samples:
        if sample["image_id"] in values:
            sample["att_cos"] = values[sample["image_id"]]

    def summarise(part: dict[str, Any], ids: list[str]) -> None:
        kept = [values[i] for i in ids if values.get(i) is not None]
        if kept:
            part["metrics"]["att_cos"] = float(sum(kept) / len(kept))
            part["metrics"]["att_cos_images"] = len(kept)

    summarise(scores, [s["image_id"] for s in samples])
    if "att_cos" not in scores["metrics"]:
        logging.warning("%s: the eval processor gave AU-cue maps, but no image has a labelled "
                        "AU (aus coded 1) inside the picture: no ATT-COS", where)
    for group, part in (scores.get("groups") or {}).items():
        summarise(part, [s["image_id"] for s in samples if s.get(report_by) == group])


@registry.register_task("facial_captioning")
class FacialCaptioningTask(RunBoundTask, BaseTask):
    def __init__(self, generate_kwargs: Mapping[str, Any], *, select_metric: str = "meteor",
                 embedding_encoder: Any = "minilm", meteor: bool = True,
                 report_metric: bool = True, au_subset: Any = None,
                 result_dir: str | None = None, ref_kinds: Any = None,
                 report_by: str | None = None,
                 score_protocol: str = DEFAULT_PROTOCOL, text_format: str = "caption") -> None:
        super().__init__()
        if text_format not in TEXT_FORMATS:
            raise InputError(f"run_cfg.text_format must be one of {TEXT_FORMATS}, got "
                             f"{text_format!r}")
        self.text_format = text_format
        if isinstance(ref_kinds, str):
            ref_kinds = [k.strip() for k in ref_kinds.split(",") if k.strip()]
        self.ref_kinds = [str(k) for k in ref_kinds] if ref_kinds else None
        if report_by not in REPORT_BY:
            raise InputError(f"run_cfg.report_by must be one of {REPORT_BY}, got {report_by!r}")
        self.report_by = report_by
        self.score_protocol = check_protocol(score_protocol, "run_cfg.score_protocol")
        if select_metric not in SELECTABLE_METRICS:
            raise InputError(f"run_cfg.select_metric must be one of {SELECTABLE_METRICS}, "
                             f"got {select_metric!r}")
        self.generate_kwargs = dict(generate_kwargs)
        self.select_metric = select_metric
        self.embedding_spec = embedding_encoder
        self.use_meteor = bool(meteor)
        self.report_metric = report_metric
        self.au_subset = _au_subset(au_subset)
        self.result_dir = result_dir
        self._encoder = None
        self._annotation_files: dict[int, list[str]] = {}
        self._records: dict[str, dict[str, Any]] = {}

    @classmethod
    def setup_task(cls, cfg: Any = None, **kwargs: Any) -> "FacialCaptioningTask":
        run_cfg = cfg.run_cfg
        generate_kwargs = {kw: run_cfg.get(key) for key, kw in GENERATION_KEYS.items()
                           if run_cfg.get(key) is not None}
        encoder = run_cfg.get("embedding_encoder", "minilm")
        if encoder is not None and not isinstance(encoder, str):
            from omegaconf import OmegaConf

            encoder = OmegaConf.to_container(encoder, resolve=True) \
                if OmegaConf.is_config(encoder) else dict(encoder)
        au_subset = run_cfg.get("au_subset")
        if au_subset is not None and not isinstance(au_subset, str):
            au_subset = list(au_subset)
        ref_kinds = run_cfg.get("ref_kinds")
        if ref_kinds is not None and not isinstance(ref_kinds, str):
            ref_kinds = list(ref_kinds)
        return cls(generate_kwargs, select_metric=run_cfg.get("select_metric", "meteor"),
                   embedding_encoder=encoder, meteor=run_cfg.get("meteor", True),
                   report_metric=run_cfg.get("report_metric", True), au_subset=au_subset,
                   result_dir=run_cfg.get("result_dir"), ref_kinds=ref_kinds,
                   report_by=run_cfg.get("report_by"),
                   score_protocol=run_cfg.get("score_protocol", DEFAULT_PROTOCOL),
                   text_format=run_cfg.get("text_format", "caption"))

    # --- data ------------------------------------------------------------------------------
    def build_datasets(self, cfg: Any) -> dict[str, Any]:
        datasets = super().build_datasets(cfg)
        for name, by_split in datasets.items():
            for split, dataset in by_split.items():
                files = annotation_storage(cfg.datasets_cfg[name], split)
                if files:
                    self._annotation_files[id(dataset)] = files
        return datasets

    def before_evaluation(self, model: Any, dataset: Any, **kwargs: Any) -> None:
        if hasattr(model, "before_evaluation"):
            model.before_evaluation(dataset=dataset, task_type=type(self))
        self._records = records_for_dataset(dataset, self._annotation_files)

    # --- generation ------------------------------------------------------------------------
    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One caption per image; with ``au_cue_map`` in the batch also its ATT-COS, from the
        cross-attention of the same generation pass (read by forward hooks, so the captions
        are unchanged)."""
        cue_maps = samples.get("au_cue_map")
        if cue_maps is None:
            captions = model.generate(samples, use_nucleus_sampling=False,
                                      **self.generate_kwargs)
            return [{"image_id": image_id, "caption": caption}
                    for image_id, caption in zip(ids_as_strings(samples["image_id"]), captions)]
        from lavis_ext.models.attention import CrossAttentionCapture

        with CrossAttentionCapture(model) as capture:
            captions = model.generate(samples, use_nucleus_sampling=False,
                                      **self.generate_kwargs)
        cosines = batch_att_cos(model, capture.probabilities(), cue_maps,
                                samples.get("au_cue_mask"))
        return [{"image_id": image_id, "caption": caption, "att_cos": cos}
                for image_id, caption, cos in zip(ids_as_strings(samples["image_id"]),
                                                  captions, cosines)]

    def evaluation(self, model: Any, data_loader: Any, cuda_enabled: bool = True) -> list:
        cuda_enabled = cuda_enabled and model_on_cuda(model)
        results: list[dict[str, str]] = []
        with torch.no_grad():
            for samples in tqdm(data_loader, desc="generating captions",
                                disable=not is_main_process()):
                if cuda_enabled:
                    samples = {k: v.cuda() if isinstance(v, torch.Tensor) else v
                               for k, v in samples.items()}
                results.extend(self.valid_step(model=model, samples=samples))
        if is_dist_avail_and_initialized():
            dist.barrier()
        return results

    # --- scoring ---------------------------------------------------------------------------
    def _result_dir(self) -> str:
        path = self.result_dir or registry.get_path("result_dir") or "results"
        os.makedirs(path, exist_ok=True)
        return path

    def encoder(self):
        if self._encoder is None and self.embedding_spec not in (None, "none"):
            spec = self.embedding_spec
            if isinstance(spec, str) and spec.partition(":")[0].strip().lower() == "openai":
                name, _, model = spec.partition(":")
                spec = {"name": "openai", **({"model": model} if model else {})}
            if isinstance(spec, dict) and spec.get("name") == "openai" \
                    and not spec.get("cache_path"):
                spec = {**spec, "cache_path": os.path.join(self._result_dir(),
                                                           "embeddings_cache.jsonl")}
            self._encoder = build_encoder(spec)
        return self._encoder

    def after_evaluation(self, val_result: list, split_name: str, epoch: Any,
                         **kwargs: Any) -> dict[str, Any] | None:
        result_dir = self._result_dir()
        result_file = self.save_result(result=val_result, result_dir=result_dir,
                                       filename=f"{split_name}_epoch{epoch}",
                                       remove_duplicate="image_id")
        if not is_main_process():
            return None
        if not self.report_metric:
            return {"agg_metrics": 0.0}
        predictions = json.loads(Path(result_file).read_text(encoding="utf-8"))
        return self.score(predictions, split_name, epoch, result_dir)

    def score(self, predictions: list[Mapping[str, Any]], split_name: str, epoch: Any,
              result_dir: str) -> dict[str, Any]:
        """Score predictions against the current split's records and write the results JSON."""
        if self.text_format == "cot":
            from lavis_ext.metrics.predictions import split_text

            predictions = [{**p, **split_text(p.get("caption") or "", "cot")[0]}
                           for p in predictions]
        scores = evaluate_captions(predictions, list(self._records.values()),
                                   encoder=self.encoder(), meteor=self.use_meteor,
                                   au_subset=self.au_subset, ref_kinds=self.ref_kinds,
                                   report_by=self.report_by, protocol=self.score_protocol,
                                   where=f"{split_name} predictions (epoch {epoch})")
        add_att_cos(scores, predictions, self.report_by, f"{split_name} (epoch {epoch})")
        metrics = {k: v for k, v in scores["metrics"].items() if v is not None}
        selected = metrics.get(self.select_metric)
        if selected is None:
            logging.warning("select_metric %r is undefined on split %s (no labels or scorer "
                            "for it); agg_metrics = 0", self.select_metric, split_name)
        metrics["agg_metrics"] = float(selected or 0.0)
        report = {"split": split_name, "epoch": epoch, "select_metric": self.select_metric,
                  **scores}  # scores name their protocol's ROUGE-L definition
        scores_file = os.path.join(result_dir, f"{split_name}_epoch{epoch}_scores.json")
        atomic_write_text(scores_file, json.dumps(report, indent=1) + "\n")
        line: dict[str, Any] = {split_name: metrics, "epoch": epoch}
        if scores.get("groups"):
            line[self.report_by] = {g: {k: v for k, v in part["metrics"].items() if v is not None}
                                    for g, part in scores["groups"].items()}
        output_dir = registry.get_path("output_dir")
        if output_dir:
            with open(os.path.join(output_dir, "evaluate.txt"), "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        logging.info("%s epoch %s: %s (scores in %s)\n%s", split_name, epoch, metrics,
                     scores_file, format_table({f"{split_name} epoch {epoch}": scores}))
        return metrics
