"""KE2NT's text-embedding emotion head, as a probe head (``run.probe.head: text_embedding``).

KE2NT (TMM 2025, arXiv 2409.08598) classifies a face by the cosine between its image feature
``e`` and frozen text embeddings ``t_k`` of one prompt per emotion, and adds an
emotional-to-neutral transformation ``n = MLP(e)`` with two losses that tie ``e - n`` to
``t_y - t_neutral`` and pull ``e`` (not ``n``) towards ``t_y``. Here the image side is the
probe's frozen (or fine-tuned) feature; the text side is a sentence encoder
(``lavis_ext.metrics.embeddings``) or the captioner's own Q-Former text branch with its ITC
projection (``qformer_text``, stage-1 checkpoints only), encoded once and cached. With
``qformer_text`` the image queries' ITC projections share the text's space, which allows a
zero-shot mode: no training, the ITC similarity alone (``ZeroShotHead``). See
docs/evaluation.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lavis_ext.errors import InputError
from lavis_ext.io import atomic_save_torch

logger = logging.getLogger(__name__)

HEADS = ("linear", "text_embedding")
WHERE = "run.probe.text_head"
TEMPLATE = "a photo of a person making {article} {emotion} facial expression."
SENTENCE_ENCODERS = ("minilm", "openai")
QFORMER_TEXT = "qformer_text"
LOSS_NAMES = ("ls", "lt", "lc")
KEYS = ("encoder", "prompts", "scale", "learn_scale", "loss_weights", "neutral",
        "neutral_hidden", "zero_shot")


def class_prompt(emotion: str, template: str = TEMPLATE) -> str:
    """KE2NT's prompt for one class: 'a' or 'an' by the emotion's first letter ('an anger')."""
    article = "an" if emotion[:1].lower() in "aeiou" else "a"
    return template.format(emotion=emotion, article=article)


@dataclass(frozen=True)
class TextHeadConfig:
    """``run.probe.text_head``, checked field by field so a typo fails before any data loads."""

    encoder: Any = "minilm"
    prompts: Any = TEMPLATE  # a template with {emotion} (and {article}), or emotion -> text
    scale: float = 100.0  # CLIP's logit scale, as KE2NT uses it
    learn_scale: bool = False
    loss_weights: Mapping[str, float] = field(
        default_factory=lambda: {"ls": 1.0, "lt": 1.0, "lc": 1.0})
    neutral: str = "neutral"
    neutral_hidden: int = 128
    zero_shot: bool = False

    @classmethod
    def parse(cls, value: Mapping[str, Any] | None) -> "TextHeadConfig":
        """Validated settings from the YAML block (None: all defaults)."""
        value = dict(value or {})
        unknown = sorted(set(value) - set(KEYS))
        if unknown:
            raise InputError(f"{WHERE}: unknown key(s) {unknown}; expected some of {list(KEYS)}")
        cfg = cls(**value)
        cfg.check()
        return cfg

    def encoder_name(self) -> str:
        spec = self.encoder
        if isinstance(spec, str):
            return spec.partition(":")[0].strip().lower()
        if isinstance(spec, Mapping):
            return str(spec.get("name", "minilm")).strip().lower()
        raise InputError(f"{WHERE}.encoder must be a name or a mapping with 'name', got {spec!r}")

    def check(self) -> None:
        name = self.encoder_name()
        if name not in SENTENCE_ENCODERS + (QFORMER_TEXT,):
            raise InputError(f"{WHERE}.encoder must be one of "
                             f"{SENTENCE_ENCODERS + (QFORMER_TEXT,)}, got {name!r}")
        if not isinstance(self.zero_shot, bool):
            raise InputError(f"{WHERE}.zero_shot must be true or false, got {self.zero_shot!r}")
        if self.zero_shot and name != QFORMER_TEXT:
            raise InputError(
                f"{WHERE}.zero_shot: zero-shot text matching needs image features in the text "
                f"encoder's space, which only encoder {QFORMER_TEXT!r} (the Q-Former's text "
                f"branch and ITC projections) gives; {name!r}'s space is reached only through "
                "the trained projection, so set zero_shot: false")
        if isinstance(self.prompts, str):
            if "{emotion}" not in self.prompts:
                raise InputError(f"{WHERE}.prompts: a template must contain '{{emotion}}', got "
                                 f"{self.prompts!r}")
        elif not isinstance(self.prompts, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip()
                for k, v in self.prompts.items()):
            raise InputError(f"{WHERE}.prompts must be a template string or a mapping "
                             f"emotion -> prompt text, got {self.prompts!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not math.isfinite(self.scale) or self.scale <= 0:
            raise InputError(f"{WHERE}.scale must be a positive number, got {self.scale!r}")
        if not isinstance(self.learn_scale, bool):
            raise InputError(f"{WHERE}.learn_scale must be true or false, "
                             f"got {self.learn_scale!r}")
        weights = self.loss_weights
        if not isinstance(weights, Mapping) or set(weights) - set(LOSS_NAMES) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                for v in weights.values()):
            raise InputError(f"{WHERE}.loss_weights must map some of {list(LOSS_NAMES)} to "
                             f"non-negative numbers, got {weights!r}")
        if not any(self.weight(n) > 0 for n in LOSS_NAMES):
            raise InputError(f"{WHERE}.loss_weights: at least one loss needs a weight > 0")
        if self.weight("ls") == 0:
            raise InputError(f"{WHERE}.loss_weights.ls must be > 0: only Ls trains the logits "
                             "the probe is scored on")
        if isinstance(self.neutral_hidden, bool) or not isinstance(self.neutral_hidden, int) \
                or self.neutral_hidden < 1:
            raise InputError(f"{WHERE}.neutral_hidden must be a positive integer, "
                             f"got {self.neutral_hidden!r}")
        if not isinstance(self.neutral, str) or not self.neutral:
            raise InputError(f"{WHERE}.neutral must be an emotion name, got {self.neutral!r}")

    def weight(self, name: str) -> float:
        return float(self.loss_weights.get(name, 1.0))

    def prompts_for(self, classes: Sequence[str]) -> list[str]:
        """One prompt per probed class, in class order; a missing class is an error."""
        if isinstance(self.prompts, str):
            return [class_prompt(c, self.prompts) for c in classes]
        missing = [c for c in classes if c not in self.prompts]
        if missing:
            raise InputError(f"{WHERE}.prompts has no text for the probed class(es) {missing}")
        return [self.prompts[c] for c in classes]

    def neutral_index(self, classes: Sequence[str]) -> int | None:
        """Where the neutral class is; Lt needs it (t_y - t_neutral), Lc uses it to skip."""
        index = list(classes).index(self.neutral) if self.neutral in classes else None
        if index is None and self.weight("lt") > 0:
            raise InputError(f"{WHERE}.loss_weights.lt > 0 needs the neutral class "
                             f"{self.neutral!r} ({WHERE}.neutral) among the probed classes "
                             f"{list(classes)}; set lt: 0 or add it to run.probe.emotions")
        return index


# --- the three losses, on plain tensors ----------------------------------------------------
def cosine_logits(e: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor | float
                  ) -> torch.Tensor:
    """scale * cos(e_i, t_k): [B, K]."""
    return scale * F.normalize(e, dim=-1) @ F.normalize(texts, dim=-1).t()


def loss_s(e: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor | float,
           target: torch.Tensor) -> torch.Tensor:
    """Ls: cross-entropy over the cosine logits."""
    return F.cross_entropy(cosine_logits(e, texts, scale), target.long())


def loss_t(e: torch.Tensor, n: torch.Tensor, texts: torch.Tensor, target: torch.Tensor,
           neutral: int) -> torch.Tensor:
    """Lt: mean(1 - cos(e - n, t_y - t_neutral)) over non-neutral samples (0 if none).

    The differences are taken before normalising, as KE2NT does.
    """
    keep = target != neutral
    if not keep.any():  # 0, with e and n in the graph (DDP wants every parameter used)
        return (e.sum() + n.sum()) * 0.0
    image = e[keep] - n[keep]
    text = texts[target[keep].long()] - texts[neutral]
    return (1.0 - F.cosine_similarity(image, text, dim=-1)).mean()


def loss_c(e: torch.Tensor, n: torch.Tensor, texts: torch.Tensor, target: torch.Tensor,
           neutral: int | None) -> torch.Tensor:
    """Lc: mean(anchor @ neg.T - anchor @ pos.T + 2) over non-neutral samples (0 if none).

    Anchor t_y, positive e, negative n, all L2-normalised. The matrix products pair every
    anchor with every sample of the batch, as KE2NT's code does, not only its own.
    """
    keep = target != neutral if neutral is not None else torch.ones_like(target, dtype=bool)
    if not keep.any():
        return (e.sum() + n.sum()) * 0.0
    anchor = F.normalize(texts[target[keep].long()], dim=-1)
    positive, negative = F.normalize(e[keep], dim=-1), F.normalize(n[keep], dim=-1)
    return (anchor @ negative.t() - anchor @ positive.t() + 2.0).mean()


class TextEmbeddingHead(nn.Module):
    """Image feature -> Linear-BN-Linear-BN -> e; logits scale * cos(e, t_k); n = MLP(e).

    ``text_embeddings`` [K, T] are frozen (a buffer): one prompt per class, in class order.
    """

    def __init__(self, feature_dim: int, text_embeddings: torch.Tensor, *, scale: float = 100.0,
                 learn_scale: bool = False, neutral: int | None = None,
                 neutral_hidden: int = 128,
                 loss_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if text_embeddings.ndim != 2 or not len(text_embeddings):
            raise ValueError(f"text embeddings must be [classes, dim], got "
                             f"{tuple(text_embeddings.shape)}")
        dim = text_embeddings.shape[1]
        self.register_buffer("text_embeddings", text_embeddings.detach().float().clone())
        self.project = nn.Sequential(nn.Linear(feature_dim, dim), nn.BatchNorm1d(dim),
                                     nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.to_neutral = nn.Sequential(nn.Linear(dim, neutral_hidden), nn.ReLU(),
                                        nn.Linear(neutral_hidden, dim))
        # Stored as a log, as CLIP does, so a learned scale stays positive.
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=learn_scale)
        # CLIP caps its learned scale at 100; a larger configured one is its own cap.
        self.max_scale = max(100.0, float(scale))
        self.neutral = neutral
        weights = dict(loss_weights or {})
        self.weights = {name: float(weights.get(name, 1.0)) for name in LOSS_NAMES}
        if self.weights["lt"] > 0 and neutral is None:
            raise ValueError("Lt needs the index of the neutral class")

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    def embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(e, n): the image feature in the text space, and its neutral counterpart."""
        e = self.project(features)
        return e, self.to_neutral(e)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] (n is only needed for the losses)."""
        return cosine_logits(self.project(features), self.text_embeddings, self.scale)

    def losses(self, features: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits``, the weighted sum ``loss`` and each of Ls, Lt, Lc."""
        e, n = self.embed(features)
        texts, target = self.text_embeddings, target.long()
        logits = cosine_logits(e, texts, self.scale)
        parts = {"loss_s": F.cross_entropy(logits.float(), target)}
        if self.weights["lt"] > 0:
            parts["loss_t"] = loss_t(e, n, texts, target, self.neutral)
        if self.weights["lc"] > 0:
            parts["loss_c"] = loss_c(e, n, texts, target, self.neutral)
        total = sum(self.weights[f"l{k[-1]}"] * v for k, v in parts.items())
        if self.weights["lt"] == 0 and self.weights["lc"] == 0:
            total = total + n.sum() * 0.0  # the transformation stays in the graph for DDP
        return {"logits": logits, "loss": total, **parts}


class ZeroShotHead(nn.Module):
    """BLIP-2's ITC rule, untrained: logits_k = max over queries of cos(q_i, t_k) / temp.

    Input: the L2-normalised ITC projections of the query outputs, flattened [B, Q * D]
    (``itc_image_features``); ``text_embeddings`` [K, D] from the same checkpoint.
    """

    def __init__(self, text_embeddings: torch.Tensor, temp: float) -> None:
        super().__init__()
        self.register_buffer("text_embeddings",
                             F.normalize(text_embeddings.detach().float(), dim=-1))
        self.temp = float(temp)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        queries = features.view(len(features), -1, self.text_embeddings.shape[1])
        similarity = torch.einsum("bqd,kd->bqk", queries, self.text_embeddings)
        return similarity.max(dim=1).values / self.temp


# --- the Q-Former's text branch (stage-1 checkpoints) --------------------------------------
def require_stage1(model: Any) -> None:
    """Refuse a model whose Q-Former text branch and ITC heads are not a stage-1 checkpoint's.

    A captioner's (stage-2) checkpoint never has them: they would be initial weights.
    """
    missing = [n for n in ("Qformer", "tokenizer", "text_proj", "vision_proj", "temp")
               if not hasattr(model, n)]
    if missing:
        raise InputError(f"{WHERE}.encoder: {QFORMER_TEXT!r} needs a Q-Former model with a text "
                         f"branch and ITC heads (arch exp_blip_qformer); "
                         f"{type(model).__name__} has no {missing}")
    stage = (getattr(model, "load_report", None) or {}).get("stage")
    if stage != 1:
        found = ("a stage-2 captioner checkpoint, which has no Q-Former text branch, text_proj "
                 "or vision_proj" if stage == 2 else "no checkpoint loaded through "
                 "model.finetuned (model.load_finetuned: True)")
        raise InputError(f"{WHERE}.encoder: {QFORMER_TEXT!r} reads the Q-Former's text branch "
                         "and ITC projections, which only a stage-1 (exp_blip_qformer) "
                         f"checkpoint has; the model has {found}. Set model.finetuned to a "
                         "stage-1 checkpoint_<epoch>.pth, or use encoder: minilm")


@torch.no_grad()
def qformer_text_embeddings(model: Any, prompts: Sequence[str]) -> torch.Tensor:
    """[K, D] unit ITC text embeddings: text_proj of the [CLS] output, as BLIP-2's ITC."""
    device = next(model.parameters()).device
    tokens = model.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=getattr(model, "max_txt_len", 32),
                             return_tensors="pt").to(device)
    was_training = model.training
    model.eval()
    try:
        out = model.Qformer.bert(tokens.input_ids, attention_mask=tokens.attention_mask,
                                 return_dict=True)
        return F.normalize(model.text_proj(out.last_hidden_state[:, 0, :]).float(),
                           dim=-1).cpu()
    finally:
        model.train(was_training)


@torch.no_grad()
def itc_image_features(model: Any, image: torch.Tensor) -> torch.Tensor:
    """[B, Q * D]: every query output's ITC projection, L2-normalised (zero-shot features)."""
    queries = model.query_outputs(model.image_tokens(image))
    return F.normalize(model.vision_proj(queries).float(), dim=-1).flatten(1)


# --- text embeddings: encoded once, cached ------------------------------------------------
def text_embeddings(cfg: TextHeadConfig, classes: Sequence[str],
                    cache_dir: str | Path | None = None, encoder: Any = None, *,
                    model: Any = None, identity: Sequence[Any] = ()) -> torch.Tensor:
    """[K, T] unit embeddings of the classes' prompts, from ``cache_dir`` when there.

    ``encoder``: an object with ``encode(texts) -> array`` (default: ``build_encoder`` of
    ``cfg.encoder``). For ``qformer_text``, ``model`` is the probed Q-Former model (checked
    with ``require_stage1``) and ``identity`` names its weights. The cache file is keyed by
    the encoder spec, the prompts and ``identity``.
    """
    from lavis_ext.metrics.embeddings import build_encoder

    prompts = cfg.prompts_for(classes)
    spec = cfg.encoder if isinstance(cfg.encoder, str) else dict(cfg.encoder)
    qformer = cfg.encoder_name() == QFORMER_TEXT
    if qformer:
        require_stage1(model)
    path = None
    if cache_dir is not None:
        key = json.dumps([spec, prompts, list(identity)], sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        path = Path(cache_dir) / f"text_embeddings_{cfg.encoder_name()}_{digest}.pt"
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("prompts") == prompts:
                logger.info("probe text embeddings from the cache: %s", path)
                return cached["embeddings"]
    if qformer:
        embeddings = qformer_text_embeddings(model, prompts)
    else:
        if encoder is None:
            encoder = build_encoder(spec)
        embeddings = torch.as_tensor(encoder.encode(prompts), dtype=torch.float32)
    if embeddings.shape[0] != len(prompts):
        raise RuntimeError(f"the text encoder gave {embeddings.shape[0]} rows for "
                           f"{len(prompts)} prompts")
    if path is not None:
        atomic_save_torch({"prompts": prompts, "embeddings": embeddings,
                           "encoder": QFORMER_TEXT if qformer else getattr(encoder, "name",
                                                                           str(spec))}, path)
    return embeddings


def build_head(cfg: TextHeadConfig, feature_dim: int, classes: Sequence[str],
               cache_dir: str | Path | None = None, encoder: Any = None, *, model: Any = None,
               identity: Sequence[Any] = ()) -> nn.Module:
    """The head for the probed ``classes``, with their text embeddings computed (or cached):
    a ``ZeroShotHead`` with ``cfg.zero_shot`` (``model``'s ITC temperature), else a
    ``TextEmbeddingHead``."""
    classes = [str(c) for c in classes]
    if cfg.zero_shot:
        texts = text_embeddings(cfg, classes, cache_dir, model=model, identity=identity)
        # BLIP-2 clamps its learned ITC temperature to [0.001, 0.5] wherever it uses it.
        temp = torch.as_tensor(model.temp).detach().clamp(0.001, 0.5)
        return ZeroShotHead(texts, temp=float(temp))
    neutral = cfg.neutral_index(classes)
    texts = text_embeddings(cfg, classes, cache_dir, encoder, model=model, identity=identity)
    return TextEmbeddingHead(feature_dim, texts, scale=float(cfg.scale),
                             learn_scale=cfg.learn_scale, neutral=neutral,
                             neutral_hidden=cfg.neutral_hidden,
                             loss_weights={n: cfg.weight(n) for n in LOSS_NAMES})
