"""Exp-BLIP models: the BLIP-2 Q-Former (stage 1) and the OPT captioner (stage 2).

The classes subclass LAVIS's ``Blip2Qformer`` and ``Blip2OPT`` and keep their attribute
names (``visual_encoder``, ``ln_vision``, ``Qformer``, ``query_tokens``, ``opt_proj``,
``opt_model``), so LAVIS's forward passes and the official ``blip2_opt``-style checkpoints
work unchanged. What differs is construction: every pretrained part goes through one weight
resolver (weights.py: config key, environment variable, cache, download), all of them before
anything is built, so a missing part fails in seconds with one error; random weights only
where the config says ``random``; checkpoints that lack trained parts are refused; the LLM's
dtype is honoured on any device; and generation takes the controls long descriptions need.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from lavis.common.registry import registry
from lavis.models.base_model import BaseModel
from lavis.models.blip2_models.blip2 import disabled_train
from lavis.models.blip2_models.blip2_opt import Blip2OPT
from lavis.models.blip2_models.blip2_qformer import Blip2Qformer

from lavis_ext.errors import InputError
from lavis_ext.models.bert import qformer_config, qformer_tokenizer, reshaped
from lavis_ext.models.text_tokens import CaptionTokens
from lavis_ext.models.checkpoint import (CheckpointKindError, IncompleteCheckpointError,
                                         load_state_dict_report, load_weights_file,
                                         module_groups)
from lavis_ext.models.llm import (choose_llm_model, estimate_parameters, llm_config, load_llm,
                                  resolve_llm_dtype)
from lavis_ext.models.llm_family import family_of
from lavis_ext.models.precision import VIT_PRECISIONS, parse_dtype
from lavis_ext.models.vision import VIT_PARTS, build_vision_encoder, vit_weights_source
from lavis_ext.models.lavis_hooks import autocast_context
from lavis_ext.models.weights import HUB_PARTS, PARTS, RANDOM, is_url, resolve_all
from lavis_ext.runners.checkpoints import load_from_config, resolve_checkpoint
from lavis_ext.runners.distributed import world_of_one

CONFIG_DIR = Path(__file__).with_name("configs")
# Stage 2's own module (LAVIS's blip2_opt name, kept for every LLM): its keys mark a captioner's
# checkpoint. Stage 1's heads, which stage 2 never has (it trains on the LLM's loss only):
STAGE2_MARKER = "opt_proj"
STAGE2_LLM_PARTS = ("opt_proj", "opt_model")
STAGE1_HEADS = ("vision_proj", "text_proj", "itm_head", "temp")
STAGE1_TYPES = ("vitg", "vitb", "tiny")
STAGE2_TYPES = ("vitg_opt2.7b", "vitg_opt6.7b", "vitb_opt2.7b", "vitb_opt6.7b", "tiny",
                "tiny_eva", "tiny_llama", "tiny_qwen2")


def _config_dict(prefix: str, types: tuple[str, ...], base: str) -> dict[str, str]:
    """Model type -> absolute YAML path (LAVIS joins it to its own root; absolute wins).
    ``base`` is what LAVIS loads when no model type is given."""
    table = {t: str(CONFIG_DIR / f"{prefix}_{t}.yaml") for t in types}
    table["base"] = table[base]
    return table


def build_qformer(num_query_token: int, vision_width: int, cross_attention_freq: int = 2,
                  weights: str | None = None, overrides: dict[str, Any] | None = None
                  ) -> tuple[nn.Module, nn.Parameter]:
    """LAVIS's Q-Former (BertLMHeadModel with cross-attention) and its query tokens.

    ``weights``: a bert-base-uncased folder to start from; ``random`` or None (a checkpoint
    loaded next supplies the Q-Former) start from random weights.
    """
    from lavis.models.blip2_models.Qformer import BertLMHeadModel

    config = qformer_config(weights, **(overrides or {}))
    config.encoder_width = vision_width
    config.add_cross_attention = True
    config.cross_attention_freq = cross_attention_freq
    config.query_length = num_query_token
    if weights not in (None, RANDOM):
        qformer = BertLMHeadModel.from_pretrained(str(weights), config=config)
    else:
        qformer = BertLMHeadModel(config)
    query_tokens = nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
    query_tokens.data.normal_(mean=0.0, std=config.initializer_range)
    return qformer, query_tokens


def qformer_text_branch(qformer: nn.Module) -> list[str]:
    """Module paths (inside the Q-Former) of its text branch: the word and position embeddings,
    the MLM head and each layer's text feed-forward. Stage 2 feeds only queries, so it drops
    them (as LAVIS's Blip2OPT does) and its checkpoints never hold them; one list for both."""
    paths = ["cls", "bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings"]
    for i in range(len(qformer.bert.encoder.layer)):
        paths += [f"bert.encoder.layer.{i}.intermediate", f"bert.encoder.layer.{i}.output"]
    return paths


def checkpoint_stage(state_dict: Mapping[str, Any], source: str) -> int:
    """1 for a Q-Former (stage-1) checkpoint, 2 for a captioner's (stage 2: ``exp_blip``,
    ``au_blip``, ``emot_blip``, Mix-/Cat-BLIP), told by their keys (``opt_proj`` only in stage
    2; stage 1's heads ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``); anything else
    raises ``CheckpointKindError`` naming the file and what it holds."""
    groups = module_groups(state_dict)
    if STAGE2_MARKER in groups:
        return 2
    if any(head in groups for head in STAGE1_HEADS):
        return 1
    raise CheckpointKindError(
        f"{source}: neither a stage-1 Q-Former checkpoint (no {', '.join(STAGE1_HEADS)}) nor a "
        f"stage-2 captioner checkpoint (no {STAGE2_MARKER}); it holds {groups or 'no tensors'}. "
        "Give a checkpoint_<epoch>.pth written by a stage-1 (exp_blip_qformer) or stage-2 "
        "(exp_blip, au_blip, emot_blip) run.")


class ExpBlipParts:
    """Construction and loading shared by both stages (a mixin before the LAVIS class)."""

    # Modules a checkpoint loaded for inference must hold (nothing else supplies them).
    TRAINED_PARTS: tuple[str, ...] = ("Qformer", "query_tokens")
    _vit_from_checkpoint = False
    _vit_has_weight_file = True  # False for the tiny encoders: none is ever published

    def _build_encoders(self, vit_model: str, img_size: int, drop_path_rate: float,
                        use_grad_checkpoint: bool, vit_precision: str, freeze_vit: bool,
                        vit_weights: str | None, vit_weights_optional: bool,
                        vision: dict[str, Any] | None, num_query_token: int,
                        cross_attention_freq: int, bert_path: str | None,
                        qformer: dict[str, Any] | None,
                        qformer_weights: str | None = None, device: str = "cpu",
                        llm_dtype: torch.dtype | None = None) -> None:
        """Tokenizer, image encoder (+ ln_vision) and Q-Former, under BLIP-2's names.

        ``qformer_weights``: a bert-base-uncased folder, ``random``, or None when a
        checkpoint supplies the Q-Former (see ``resolve_weights``). ``device``: where the
        model will run (``model.device``), which decides what ``vit_precision`` means.
        """
        self.tokenizer = qformer_tokenizer(bert_path)
        if parse_dtype(vit_precision, "model.vit_precision", VIT_PRECISIONS) != "float32" \
                and not freeze_vit:
            logging.warning(f"model.vit_precision is {vit_precision} but freeze_vit is False: "
                            "the image encoder is trained, so its weights stay float32")
            vit_precision = "float32"
        self._vit_from_checkpoint = (vit_weights_optional and vit_model in VIT_PARTS and
                                     vit_weights_source(vit_model, vit_weights, True) == RANDOM)
        self._vit_has_weight_file = vit_model in VIT_PARTS
        self.visual_encoder, self.ln_vision = build_vision_encoder(
            vit_model, img_size, drop_path_rate=drop_path_rate,
            use_grad_checkpoint=use_grad_checkpoint, precision=vit_precision,
            weights=vit_weights, weights_optional=vit_weights_optional, options=vision,
            device=device, llm_dtype=llm_dtype)
        if freeze_vit:
            for param in self.visual_encoder.parameters():
                param.requires_grad = False
            self.visual_encoder = self.visual_encoder.eval()
            self.visual_encoder.train = disabled_train
            logging.info("freeze vision encoder")
        self.Qformer, self.query_tokens = build_qformer(
            num_query_token, self.visual_encoder.num_features, cross_attention_freq,
            qformer_weights, qformer)

    def maybe_autocast(self, dtype: torch.dtype = torch.float16) -> Any:
        """``torch.amp`` autocast for the model's device; on CPU only for bfloat16."""
        return autocast_context(self.device, dtype, super().maybe_autocast)

    def load_checkpoint_from_config(self, cfg: Any, **kwargs: Any) -> None:
        """Honours ``load_pretrained: False``; errors name the file and the config key."""
        load_from_config(self, cfg, **kwargs)

    def _required_from_checkpoint(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        vit = ("visual_encoder", "ln_vision") if self._vit_from_checkpoint else ()
        return parts + vit

    def load_checkpoint(self, url_or_filename: str) -> dict[str, Any]:
        """Load a trained checkpoint for inference (weights only) and keep the key report.

        Strict where it matters: every trained part (``TRAINED_PARTS``, and the image encoder
        when no weight file supplied it) must be in the file, or this raises with the report;
        unexpected keys are listed at WARNING.
        """
        self.load_report = load_state_dict_report(
            self, load_weights_file(url_or_filename), str(url_or_filename),
            required=self._required_from_checkpoint(self.TRAINED_PARTS),
            unexpected_level=logging.WARNING)
        return self.load_report

    def load_from_pretrained(self, url_or_filename: str, **_: Any) -> dict[str, Any]:
        """Load a training start point (BLIP-2's or a stage-1 checkpoint): the Q-Former and
        its queries must be in it; keys of other stages are reported at INFO."""
        self.load_report = load_state_dict_report(
            self, load_weights_file(url_or_filename), str(url_or_filename),
            required=self._required_from_checkpoint(("Qformer", "query_tokens")))
        return self.load_report

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """The image encoder's tokens after ``ln_vision``, in float32 (the Q-Former's input)."""
        with self.maybe_autocast():
            image_embeds = self.ln_vision(self.visual_encoder(image))
        return image_embeds.float()

    def query_outputs(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """The Q-Former's query outputs over ``image_tokens``: the one pass that the LLM prefix,
        the probes and the zero-shot features all read."""
        atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long,
                          device=image_embeds.device)
        query = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        out = self.Qformer.bert(query_embeds=query, encoder_hidden_states=image_embeds,
                                encoder_attention_mask=atts, return_dict=True)
        return out.last_hidden_state

    @torch.no_grad()
    def probe_features(self, image: torch.Tensor, source: str = "qformer") -> torch.Tensor:
        """Pooled features for probing: ``vision`` (mean of encoder tokens) or ``qformer``
        (mean of the query outputs)."""
        was_training = self.training
        self.eval()
        try:
            image_embeds = self.image_tokens(image)
            if source == "vision":
                return image_embeds.mean(dim=1)
            if source != "qformer":
                raise ValueError(f"probe source must be 'vision' or 'qformer', got {source!r}")
            return self.query_outputs(image_embeds).mean(dim=1)
        finally:
            self.train(was_training)

    @staticmethod
    def _common_args(cfg: Any) -> dict[str, Any]:
        as_dict = lambda v: dict(v) if v is not None else None  # noqa: E731
        return dict(
            vit_model=cfg.get("vit_model", "eva_clip_g"), img_size=cfg.get("image_size", 224),
            drop_path_rate=cfg.get("drop_path_rate", 0), vit_precision=cfg.get(
                "vit_precision", "fp16"),
            use_grad_checkpoint=cfg.get("use_grad_checkpoint", False),
            freeze_vit=cfg.get("freeze_vit", True),
            num_query_token=cfg.get("num_query_token", 32),
            cross_attention_freq=cfg.get("cross_attention_freq", 2),
            max_txt_len=cfg.get("max_txt_len", 32), vit_weights=cfg.get("vit_weights"),
            vit_weights_optional=bool(cfg.get("load_finetuned", False)
                                      and cfg.get("finetuned")),
            bert_path=cfg.get("bert_path"), qformer=as_dict(cfg.get("qformer")),
            vision=as_dict(cfg.get("vision")), device=str(cfg.get("device") or "cpu"),
        )

    @classmethod
    def from_config(cls, cfg: Any) -> "ExpBlipParts":
        # A copy: resolved cache paths must not end up in the config that runners save.
        cfg = copy.deepcopy(cfg)
        qformer_weights = cls.resolve_weights(cfg)
        model = cls(**cls._common_args(cfg), **cls._stage_args(cfg),
                    qformer_weights=qformer_weights)
        model.load_checkpoint_from_config(cfg)
        return model

    @classmethod
    def resolve_weights(cls, cfg: Any) -> str | None:
        """Find (or fetch) every pretrained part ``cfg`` needs, before anything is built.

        Resolved files are written into ``cfg`` (``finetuned``, ``pretrained``,
        ``vit_weights``); every missing part is reported in one ``WeightsUnavailableError``.
        Returns the Q-Former's start: a bert-base-uncased folder, ``random``, or None when a
        checkpoint supplies it.
        """
        finetuned = bool(cfg.get("load_finetuned", False))
        pretrained = not finetuned and bool(cfg.get("load_pretrained", False))
        requests: list[tuple[str, str, Any]] = []  # (config key, manifest part, value)
        if finetuned and cls.CHECKPOINT_NAME is None:  # no published file: a path or URL
            cfg["finetuned"] = resolve_checkpoint(
                cfg.get("finetuned"), "model.finetuned (model.load_finetuned is True)")
        elif finetuned:
            requests.append(("finetuned", cls.CHECKPOINT_NAME, cfg.get("finetuned")))
        if pretrained:
            value = cfg.get("pretrained")
            if value in (None, "", "blip2_pretrained", PARTS["blip2_pretrained"].url):
                requests.append(("pretrained", "blip2_pretrained", value))
            elif not is_url(str(value)) and not os.path.exists(os.path.expanduser(str(value))):
                raise FileNotFoundError(
                    f"model.pretrained (model.load_pretrained is True): '{value}' does not "
                    "exist; give a checkpoint file, a run folder, or blip2_pretrained")
        vit_model, vit_value = cfg.get("vit_model", "eva_clip_g"), cfg.get("vit_weights")
        if vit_model in VIT_PARTS and (
                not finetuned or vit_weights_source(vit_model, vit_value, True) != RANDOM):
            requests.append(("vit_weights", VIT_PARTS[vit_model], vit_value))
        bert_path, qformer_start = cfg.get("bert_path"), None
        if bert_path == RANDOM:
            qformer_start = RANDOM
        elif not (finetuned or pretrained):
            if reshaped(cfg.get("qformer")):
                raise InputError("model.qformer changes the Q-Former's shape, so "
                                 "bert-base-uncased's weights cannot initialise it: set "
                                 "model.bert_path: random (or load a checkpoint)")
            requests.append(("bert_path", "bert-base-uncased", bert_path))
        llm = cls._llm_name(cfg)
        if llm in HUB_PARTS:  # found (or fetched) now; loaded by hub name
            requests.append(("opt_model", HUB_PARTS[llm].name, llm))
        paths = resolve_all((part, value) for _, part, value in requests)
        for (key, _, _), path in zip(requests, paths):
            if key == "bert_path":
                qformer_start = path
            elif key != "opt_model":
                cfg[key] = path
        return qformer_start

    @classmethod
    def _llm_name(cls, cfg: Any) -> str | None:
        """The LLM of ``model.llm_model`` / ``model.opt_model`` (its older name), the one the
        project set when the other is the model type's default (see ``choose_llm_model``)."""
        opt, llm = cfg.get("opt_model"), cfg.get("llm_model")
        default = None
        if opt and llm and opt != llm and cfg.get("model_type") in cls.PRETRAINED_MODEL_CONFIG_DICT:
            from omegaconf import OmegaConf

            defaults = OmegaConf.load(cls.default_config_path(cfg.model_type)).model
            default = defaults.get("llm_model") or defaults.get("opt_model")
        return choose_llm_model(opt, llm, default)


@registry.register_model("exp_blip_qformer")
class ExpBlipQformer(ExpBlipParts, Blip2Qformer):
    """Stage 1: the Q-Former trained with ITC + ITM + ITG against the image encoder; also the
    encoder of the Q-Former probes, which load a captioner's (stage-2) checkpoint into it."""

    PRETRAINED_MODEL_CONFIG_DICT = _config_dict("exp_blip_qformer", STAGE1_TYPES, "vitg")
    # None: no checkpoint is published (no weights.PARTS entry); model.finetuned names a file,
    # a run folder (its newest checkpoint) or a URL.
    CHECKPOINT_NAME: str | None = None
    TRAINED_PARTS = ("Qformer", "query_tokens", "vision_proj", "text_proj", "itm_head", "temp",
                     "ln_vision")

    def __init__(self, vit_model: str = "eva_clip_g", img_size: int = 224,
                 drop_path_rate: float = 0, use_grad_checkpoint: bool = False,
                 vit_precision: str = "fp16", freeze_vit: bool = True, num_query_token: int = 32,
                 cross_attention_freq: int = 2, embed_dim: int = 256, max_txt_len: int = 32,
                 vit_weights: str | None = None, vit_weights_optional: bool = False,
                 bert_path: str | None = None, qformer: dict[str, Any] | None = None,
                 vision: dict[str, Any] | None = None, qformer_weights: str | None = None,
                 device: str = "cpu"):
        BaseModel.__init__(self)
        self._build_encoders(vit_model, img_size, drop_path_rate, use_grad_checkpoint,
                             vit_precision, freeze_vit, vit_weights, vit_weights_optional,
                             vision, num_query_token, cross_attention_freq, bert_path, qformer,
                             qformer_weights, device)
        self.Qformer.resize_token_embeddings(len(self.tokenizer))
        # The query branch starts as a copy of the text branch, as BLIP-2 initialises it.
        state = self.Qformer.state_dict()
        for name, param in self.Qformer.named_parameters():
            if "_query" in name:
                param.data.copy_(state[name.replace("_query", "")])
        hidden = self.Qformer.config.hidden_size
        self.vision_proj = nn.Linear(hidden, embed_dim)
        self.text_proj = nn.Linear(hidden, embed_dim)
        self.itm_head = nn.Linear(hidden, 2)
        self.temp = nn.Parameter(0.07 * torch.ones([]))
        self.max_txt_len = max_txt_len

    @staticmethod
    def _stage_args(cfg: Any) -> dict[str, Any]:
        return {"embed_dim": cfg.get("embed_dim", 256)}

    def load_checkpoint(self, url_or_filename: str) -> dict[str, Any]:
        """Load a stage-1 checkpoint, or the query branch of a captioner's (stage 2), for
        inference; which one is told by the file's keys (``checkpoint_stage``).

        Stage 1: every trained part must be in the file (``TRAINED_PARTS``, as
        ``ExpBlipParts.load_checkpoint``). Stage 2 (what the Q-Former probes of Tables 3-4
        load): the captioner's Q-Former without its text branch, ``query_tokens``,
        ``ln_vision`` and the image encoder must be in it (the encoder unless a weight file,
        ``model.vit_weights``, supplied it; always for the tiny encoders, which have none), or
        ``IncompleteCheckpointError`` names the file and the missing keys. What stage 2 never
        has, the Q-Former's text branch (``qformer_text_branch``) and the stage-1 heads
        (``STAGE1_HEADS``), keeps this model's initial weights without a warning:
        ``probe_features`` reads none of it, but ITC/ITM/ITG (``forward``) would run on those
        initial weights. The captioner's LLM parts (``opt_proj``, ``opt_model``) are set
        aside, reported at INFO. ``load_report["stage"]`` says which kind was loaded.
        """
        source = str(url_or_filename)
        state = load_weights_file(url_or_filename)
        if checkpoint_stage(state, source) == 1:
            self.load_report = load_state_dict_report(
                self, state, source, required=self._required_from_checkpoint(self.TRAINED_PARTS),
                unexpected_level=logging.WARNING)
            self.load_report["stage"] = 1
            return self.load_report
        llm = {k for k in state if k.split(".", 1)[0] in STAGE2_LLM_PARTS}
        logging.info("%s: a stage-2 captioner checkpoint; loading its query branch and image "
                     "encoder, leaving out its LLM parts %s", source, module_groups(llm))
        required = ("Qformer", "query_tokens", "ln_vision")
        has_vit = any(k.startswith("visual_encoder.") for k in state)
        if self._vit_from_checkpoint or not self._vit_has_weight_file:
            required += ("visual_encoder",)
            if not has_vit and self._vit_has_weight_file:
                raise IncompleteCheckpointError(
                    f"{source}: this stage-2 checkpoint has no image encoder (its run kept the "
                    "encoder frozen, so the runner did not save it) and no weight file supplies "
                    "one: set model.vit_weights to the encoder the captioner was trained with")
        elif not has_vit:
            logging.info("%s: no image encoder in it (stage 2 kept it frozen): the encoder "
                         "stays the one from model.vit_weights", source)
        self.load_report = load_state_dict_report(
            self, {k: v for k, v in state.items() if k not in llm}, source,
            required=required, unexpected_level=logging.WARNING,
            exempt=[f"Qformer.{path}" for path in qformer_text_branch(self.Qformer)])
        self.load_report["stage"] = 2
        return self.load_report

    def forward(self, samples: dict[str, Any]) -> Any:
        # Blip2Qformer.forward calls dist.get_rank() and gathers features over the group.
        with world_of_one(self.device):
            return super().forward(samples)


def au_cue_weight(options: Mapping[str, Any] | None) -> float:
    """``model.au_cue_loss.weight`` checked: a number >= 0 (0, the default, is off); any
    other key in ``model.au_cue_loss`` is refused, so a misspelt one does not pass unseen."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"weight"})
    if unknown:
        raise InputError(f"model.au_cue_loss: unknown key(s) {unknown}; only 'weight' is read")
    try:
        weight = float(options.get("weight", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise InputError(f"model.au_cue_loss.weight must be a number, got "
                         f"{options.get('weight')!r}") from None
    if not weight >= 0:
        raise InputError(f"model.au_cue_loss.weight must be >= 0 (0 is off), got {weight}")
    return weight


@registry.register_model("exp_blip")
class ExpBlip(ExpBlipParts, Blip2OPT):
    """Stage 2: the Q-Former feeding a frozen LLM that writes the description. Every LLM
    trains through ``inputs_embeds`` (``_embeds_forward``: for OPT the loss of LAVIS's
    ``Blip2OPT.forward``) and generates through them, but OPT on transformers 4.26, which
    generates with LAVIS's ``query_embeds`` (llm_family.py). The attribute names stay
    LAVIS's (``opt_model``, ``opt_tokenizer``, ``opt_proj``) for every LLM, so checkpoints
    have the same keys."""

    PRETRAINED_MODEL_CONFIG_DICT = _config_dict("exp_blip", STAGE2_TYPES, "vitg_opt6.7b")
    CHECKPOINT_NAME = "exp_blip"
    TRAINED_PARTS = ("Qformer", "query_tokens", "opt_proj", "ln_vision")

    def __init__(self, vit_model: str = "eva_clip_g", img_size: int = 224,
                 drop_path_rate: float = 0, use_grad_checkpoint: bool = False,
                 vit_precision: str = "fp16", freeze_vit: bool = True, num_query_token: int = 32,
                 cross_attention_freq: int = 2, max_txt_len: int = 32,
                 vit_weights: str | None = None, vit_weights_optional: bool = False,
                 bert_path: str | None = None, qformer: dict[str, Any] | None = None,
                 vision: dict[str, Any] | None = None, opt_model: str | None = None,
                 prompt: str = "", llm_dtype: str = "auto",
                 tiny_lm: dict[str, Any] | None = None,
                 generation: dict[str, Any] | None = None, qformer_weights: str | None = None,
                 llm_model: str | None = None, device: str = "cpu",
                 au_cue_loss: Mapping[str, Any] | None = None):
        BaseModel.__init__(self)
        self.au_cue_weight = au_cue_weight(au_cue_loss)
        if opt_model is None and llm_model is None:
            opt_model = "facebook/opt-2.7b"
        opt_model = choose_llm_model(opt_model, llm_model)
        # The LLM's config and dtype first: a bad opt_model fails before the encoders build.
        llm_cfg = llm_config(opt_model, tiny_lm) if opt_model else None
        self.llm_dtype = resolve_llm_dtype(
            llm_dtype, device, parameters=estimate_parameters(llm_cfg) if llm_cfg else None)
        self._build_encoders(vit_model, img_size, drop_path_rate, use_grad_checkpoint,
                             vit_precision, freeze_vit, vit_weights, vit_weights_optional,
                             vision, num_query_token, cross_attention_freq, bert_path, qformer,
                             qformer_weights, device, self.llm_dtype)
        # Stage 2 uses only the query branch: drop the text-side parts, as BLIP-2 does.
        for path in qformer_text_branch(self.Qformer):
            parent, _, name = path.rpartition(".")
            setattr(self.Qformer.get_submodule(parent), name, None)

        # A frozen half-precision encoder (vit_precision: fp16, see precision.vit_dtype):
        # fp16 on CUDA as in LAVIS, the half LLM's dtype (bf16) on CPU; float() keeps it.
        self._half_vit = next(self.visual_encoder.parameters()).dtype != torch.float32
        self.opt_tokenizer, self.opt_model = load_llm(opt_model, self.llm_dtype, tiny_lm,
                                                      llm_cfg)
        for param in self.opt_model.parameters():
            param.requires_grad = False
        self.llm_family = family_of(self.opt_model)
        self.eos_token_id = self.llm_family.eos_token_id(self.opt_tokenizer)
        self.opt_proj = nn.Linear(self.Qformer.config.hidden_size,
                                  self.opt_model.config.hidden_size)
        self.max_txt_len = max_txt_len
        self.prompt = prompt
        self.prompt_length = self.opt_tokenizer(self.prompt, return_tensors="pt"
                                                ).attention_mask.sum(1)
        self.generation_defaults = dict(generation or {})

    @staticmethod
    def _stage_args(cfg: Any) -> dict[str, Any]:
        return dict(opt_model=ExpBlip._llm_name(cfg), prompt=cfg.get("prompt", ""),
                    llm_dtype=cfg.get("llm_dtype", "auto"),
                    tiny_lm=dict(cfg.get("tiny_lm")) if cfg.get("tiny_lm") else None,
                    generation=dict(cfg.get("generation")) if cfg.get("generation") else None,
                    au_cue_loss=dict(cfg.get("au_cue_loss")) if cfg.get("au_cue_loss") else None)

    def maybe_autocast(self, dtype: torch.dtype | None = None):
        """Autocast in the LLM's dtype: on GPU as LAVIS does; on CPU whenever the LLM is
        half precision (its layers then meet the fp32 query embeddings and LayerNorms), and
        not at all for a float32 LLM on CPU."""
        if dtype is None:
            dtype = self.llm_dtype if self.llm_dtype != torch.float32 else torch.float16
        if self._half_llm_on_cpu():
            return torch.autocast("cpu", dtype=self.llm_dtype)
        return super().maybe_autocast(dtype)

    def float(self) -> "ExpBlip":
        """Float32 for every part except those kept in half precision on purpose: the LLM
        (``llm_dtype``) and a frozen ``vit_precision: fp16`` image encoder.

        Fixes LAVIS 1.0.2's ``load_model`` / ``load_model_and_preprocess``, which call
        ``model.float()`` whenever the device is the CPU: that cast turned OPT-6.7B's 13.4 GB
        of bf16 weights into 27 GB, so the released Exp-BLIP could not load on a 24 GB machine.
        ``llm_dtype: float32`` gives a float32 LLM.
        """
        keep = {"opt_model"} if self.llm_dtype != torch.float32 else set()
        if self._half_vit:
            keep.add("visual_encoder")
        for name, child in self.named_children():
            if name not in keep:
                child.float()
        for param in self._parameters.values():
            if param is not None and param.is_floating_point():
                param.data = param.data.float()
        return self

    def _half_llm_on_cpu(self) -> bool:
        return self.llm_dtype != torch.float32 and self.opt_proj.weight.device.type == "cpu"

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``_embeds_forward`` (LAVIS's Blip2OPT forward, for any causal LM); on CPU with a
        half-precision LLM, all of it under autocast (LAVIS autocasts only the image encoder
        and the LLM, and the Q-Former between them would receive half-precision image
        features)."""
        if self._half_llm_on_cpu():
            with self.maybe_autocast():
                return self._embeds_forward(samples)
        return self._embeds_forward(samples)

    def _embeds_forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LAVIS's Blip2OPT forward for any causal LM: the projected queries, then the text
        (BOS as the tokenizer adds it, the prompt, the caption and the family's end of text,
        cut at ``max_txt_len``) through ``inputs_embeds``; loss on the caption only. Padding
        is found by the attention mask, since a pad id may equal the EOS id. For OPT the
        queries stay float32 beside the token embeddings, as in LAVIS (``casts_prefix``)."""
        image = samples["image"]
        if self.au_cue_weight > 0:
            prefix, cue_loss = self._prefix_and_cue_loss(samples)
        else:
            prefix, cue_loss = self._llm_prefix(image), None
        tokenizer = self.opt_tokenizer
        tokenizer.padding_side = "right"
        end = self.llm_family.end_of_text(tokenizer)
        input_ids, text_mask = self._caption_tokens(tokenizer)(
            [t + end for t in samples["text_input"]])
        input_ids, text_mask = input_ids.to(image.device), text_mask.to(image.device)
        targets = input_ids.masked_fill(text_mask == 0, -100)
        if self.prompt:
            targets[:, :self.prompt_length] = -100  # no loss on the prompt
        embeds = self.opt_model.get_input_embeddings()(input_ids)
        queries = prefix.shape[:2]
        if self.llm_family.casts_prefix:
            prefix = prefix.to(embeds.dtype)
        inputs = torch.cat([prefix, embeds], dim=1)
        mask = torch.cat([torch.ones(queries, dtype=torch.long, device=image.device),
                          text_mask], dim=1)
        targets = torch.cat([torch.full(queries, -100, dtype=torch.long, device=image.device),
                             targets], dim=1)
        with self.maybe_autocast():
            out = self.opt_model(inputs_embeds=inputs, attention_mask=mask, labels=targets,
                                 return_dict=True)
        if cue_loss is None:
            return {"loss": out.loss}
        return {"loss": out.loss + cue_loss, "loss_lm": out.loss.detach(),
                "loss_au_cue": cue_loss.detach()}

    def _caption_tokens(self, tokenizer: Any) -> CaptionTokens:
        """The training texts' token ids, each text tokenized once (``text_tokens.py``)."""
        cache = getattr(self, "_token_cache", None)
        if cache is None or cache.tokenizer is not tokenizer or \
                cache.max_length != self.max_txt_len:
            cache = self._token_cache = CaptionTokens(tokenizer, self.max_txt_len)
        return cache

    def _prefix_and_cue_loss(self, samples: dict[str, Any]) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        """The LLM prefix and the AU-cue alignment loss (``model.au_cue_loss``): the
        Q-Former's cross-attention, captured with its graph while the prefix is computed
        (the hooks are removed after it), against ``samples["au_cue_map"]``."""
        from lavis_ext.models.attention import (CrossAttentionCapture, alignment_loss,
                                                  cue_maps_on_grid, token_grid)

        maps = samples.get("au_cue_map")
        if maps is None:
            raise InputError(
                f"model.au_cue_loss.weight is {self.au_cue_weight:g}, but the batch has no "
                "'au_cue_map' (one AU heatmap per image on the patch grid, batch x rows x "
                "cols): train with the dataset's vis_processor.train: face_image_train_au_cue "
                "(docs/explain.md), or set model.au_cue_loss.weight to 0")
        with CrossAttentionCapture(self, keep_graph=True) as capture:
            prefix = self._llm_prefix(samples["image"])
        probs = capture.probabilities()
        grid = token_grid(probs.shape[-1], self.visual_encoder)
        maps = cue_maps_on_grid(torch.as_tensor(maps, device=probs.device), grid,
                                tuple(samples["image"].shape[-2:]))
        loss = alignment_loss(probs, maps, grid, weight=self.au_cue_weight,
                              mask=samples.get("au_cue_mask"))
        return prefix, loss

    def _llm_prefix(self, image: torch.Tensor) -> torch.Tensor:
        """The Q-Former's query outputs projected into the LLM's input space."""
        return self.opt_proj(self.query_outputs(self.image_tokens(image)))

    def _prompt_ids(self, prompt: str, batch: int, device: torch.device) -> torch.Tensor:
        """Prompt token ids as the LLM's family starts a text: OPT always with BOS (an empty
        prompt must not give []); others with BOS where their tokenizer adds one."""
        ids = self.llm_family.prompt_ids(self.opt_tokenizer, self.opt_model.config, prompt)
        return torch.tensor([ids] * batch, dtype=torch.long, device=device)

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False,
                 num_beams: int = 5, max_length: int = 200, min_length: int = 1,
                 top_p: float = 0.9, repetition_penalty: float = 1.0,
                 length_penalty: float = 1.0, num_captions: int = 1, temperature: float = 1.0,
                 no_repeat_ngram_size: int = 0, use_cache: bool = True,
                 **_: Any) -> list[str]:
        """Captions for a batch of images: ``len(images) * num_captions`` strings.

        ``no_repeat_ngram_size`` and ``repetition_penalty`` curb the repeated sentences the
        paper reports for long descriptions; nucleus sampling gives several captions each.
        ``use_cache=False`` recomputes the whole sequence at every step (same captions; for
        timing against LAVIS's stock OPT, which never used its cache). transformers always
        caches when generating from ``inputs_embeds``, so OPT then takes the ``query_embeds``
        path on every stack.
        """
        image = samples["image"]
        batch = image.shape[0]
        prompt = samples.get("prompt", self.prompt)
        if not isinstance(prompt, str):
            raise ValueError("generate: samples['prompt'] must be one string for the batch")
        with self.maybe_autocast():
            prefix = self._llm_prefix(image).to(self.opt_model.dtype)
            input_ids = self._prompt_ids(prompt, batch, image.device)
            if self.llm_family.generates_from_embeds and (
                    use_cache or not self.llm_family.takes_query_embeds):
                return self._embeds_generate(
                    prefix, input_ids, use_cache=use_cache,
                    do_sample=use_nucleus_sampling, top_p=top_p,
                    temperature=temperature, num_beams=1 if use_nucleus_sampling else num_beams,
                    max_new_tokens=max_length,
                    min_new_tokens=max(min_length - input_ids.shape[1], 0),
                    repetition_penalty=repetition_penalty, length_penalty=length_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size,
                    num_return_sequences=(num_captions if use_nucleus_sampling
                                          else min(num_captions, num_beams)))
            if use_nucleus_sampling:
                num_beams = 1
                query_embeds = prefix.repeat_interleave(num_captions, dim=0)
            else:
                num_captions = min(num_captions, num_beams)
                query_embeds = prefix.repeat_interleave(num_beams, dim=0)
            attention_mask = torch.ones(batch, prefix.shape[1] + input_ids.shape[1],
                                        dtype=torch.long, device=image.device)
            outputs = self.opt_model.generate(
                input_ids=input_ids, query_embeds=query_embeds, attention_mask=attention_mask,
                do_sample=use_nucleus_sampling, top_p=top_p, temperature=temperature,
                num_beams=num_beams, max_new_tokens=max_length, min_length=min_length,
                eos_token_id=self.eos_token_id, pad_token_id=self.opt_tokenizer.pad_token_id,
                repetition_penalty=repetition_penalty, length_penalty=length_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_captions,
                use_cache=use_cache)
        texts = self.opt_tokenizer.batch_decode(outputs[:, input_ids.shape[1]:],
                                                skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _embeds_generate(self, prefix: torch.Tensor, input_ids: torch.Tensor,
                         **controls: Any) -> list[str]:
        """Generation from queries + prompt as ``inputs_embeds`` (every LLM but OPT on
        transformers 4.26), which transformers expands for beams and return sequences itself
        (so nothing is expanded here). Only new tokens come back; ``min_new_tokens`` counts like OPT's ``min_length``
        (the prompt's ids included)."""
        embeds = self.opt_model.get_input_embeddings()(input_ids).to(prefix.dtype)
        inputs = torch.cat([prefix, embeds], dim=1)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
        outputs = self.opt_model.generate(
            inputs_embeds=inputs, attention_mask=mask, eos_token_id=self.eos_token_id,
            pad_token_id=self.opt_tokenizer.pad_token_id, **controls)
        texts = self.opt_tokenizer.batch_decode(outputs, skip_special_tokens=True)
        return [text.strip() for text in texts]


@registry.register_model("au_blip")
class AuBlip(ExpBlip):
    """AU-BLIP: the stage-2 captioner trained on AU captions (same architecture)."""

    PRETRAINED_MODEL_CONFIG_DICT = _config_dict("exp_blip", STAGE2_TYPES, "vitg_opt6.7b")
    CHECKPOINT_NAME = "au_blip"


@registry.register_model("emot_blip")
class EmotBlip(ExpBlip):
    """Emot-BLIP: the stage-2 captioner trained on emotion captions (same architecture)."""

    PRETRAINED_MODEL_CONFIG_DICT = _config_dict("exp_blip", STAGE2_TYPES, "vitg_opt6.7b")
    CHECKPOINT_NAME = "emot_blip"
