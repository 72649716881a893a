"""LAVIS Exp-BLIP (EVA ViT + Q-Former + LLM) -> transformers' ``Blip2ForConditionalGeneration``.

The one place that knows both key layouts (docs/export.md has the table). ``ARCH`` describes
the architecture a stage-2 model has, read off the built model; from it come every key the
LAVIS state dict must hold (``expected_keys``) and the Hugging Face configs. A state dict with a
key outside that set, or without one of them, is refused with the keys named: nothing is
guessed, dropped or left at a random init. The differences the mapping bridges, each checked
against both implementations' code:

* EVA attention keeps ``q_bias`` and ``v_bias`` (no key bias); transformers keeps one
  ``qkv.bias`` (its key third is a zero tensor, as EVA's forward builds it).
* BLIP-2 uses 39 of EVA-G's 40 blocks (``lavis.models.eva_vit.create_eva_vit_g`` builds
  ``depth=39``) and has no final ViT norm; its ``ln_vision`` becomes ``post_layernorm``
  (eps 1e-5 in LAVIS, transformers uses the blocks' 1e-6 there: a difference below 1e-5 on
  features of unit scale, measured by the equivalence test).
* The class token and position embeddings are the vision embeddings' ``class_embedding`` and
  ``position_embedding``.
* The stage-2 Q-Former has only its query branch: ``embeddings.LayerNorm`` (applied to the
  query tokens) is transformers' ``qformer.layernorm``; ``attention.self`` is
  ``attention.attention``; cross-attention sits on layers ``i % cross_attention_freq == 0``
  in both. ``embeddings.position_ids`` is a constant buffer, checked and dropped.
* ``opt_proj`` is ``language_projection``; ``opt_model.*`` is ``language_model.*``, key for
  key: transformers' BLIP-2 builds its LLM with ``AutoModelForCausalLM``, whose module tree is
  the one our LLM has. For OPT, LAVIS's modeling_opt has the tree of transformers'
  OPTForCausalLM; every other family (Llama, Qwen2, Mistral ...) is transformers' own class
  here already. A tied output head is not written (transformers ties it on load).

Only torch is imported here; the folder writer is ``lavis_ext.export.writer``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from lavis_ext.errors import UsageError


class ExportKeyError(UsageError):
    """A state dict that does not match the architecture: keys missing or left over."""


@dataclass(frozen=True)
class Arch:
    """What the key set and the Hugging Face configs depend on."""

    vision_depth: int
    vision_width: int
    vision_heads: int
    vision_mlp: int
    patch_size: int
    image_size: int
    qformer_layers: int
    cross_attention_freq: int
    num_query_tokens: int
    llm_family: str  # the LLM config's model_type: opt, llama, qwen2 ...
    llm_keys: tuple[str, ...]  # the LLM's state-dict keys (without "opt_model.")
    llm_tied: bool  # lm_head shares embed_tokens


class NotExportable(UsageError):
    """A model with no transformers counterpart (said why)."""


def llm_family(llm: Any) -> str:
    """The LLM's family (its config's ``model_type``) if transformers' BLIP-2 can hold it;
    else ``NotExportable`` naming it.

    ``Blip2ForConditionalGeneration`` builds its language model with
    ``AutoModelForCausalLM.from_config(text_config)``, so it holds every decoder family that
    mapping knows. Ours is LAVIS's OPT (the tree of transformers' OPT) or transformers' own
    class of that family, so the keys carry over unchanged.
    """
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM
    from transformers import PreTrainedModel
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    family = getattr(getattr(llm, "config", None), "model_type", None) or type(llm).__name__
    if isinstance(llm, OPTForCausalLM):
        return "opt"
    if not isinstance(llm, PreTrainedModel) or family not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise NotExportable(
            f"the LLM is a '{family}' model ({type(llm).__name__}); transformers' BLIP-2 holds "
            "only the decoder families of AutoModelForCausalLM (OPT, Llama, Qwen2, Mistral ...)")
    names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family]
    names = (names,) if isinstance(names, str) else tuple(names)
    if type(llm).__name__ not in names:
        raise NotExportable(
            f"the LLM is a {type(llm).__name__}, not transformers' {names[0]}, which BLIP-2 "
            f"builds for '{family}': its weights might not load there key for key")
    return family


def arch_of(model: Any) -> Arch:
    """Read the architecture off a built stage-2 Exp-BLIP; refuse what BLIP-2 cannot hold."""
    from lavis.models.eva_vit import VisionTransformer

    encoder = getattr(model, "visual_encoder", None)
    if encoder is None or not hasattr(model, "opt_model"):
        raise NotExportable("export-hf needs a stage-2 captioner (exp_blip, au_blip, "
                            f"emot_blip); got {type(model).__name__}")
    family = llm_family(model.opt_model)
    if not isinstance(encoder, VisionTransformer):
        raise NotExportable(
            f"the image encoder is {type(encoder).__name__}, which transformers' BLIP-2 has no "
            "counterpart for: only LAVIS's EVA ViT (vit_model eva_clip_g, or tiny_eva for "
            "tests) exports; the conv-stem `tiny` demo model does not")
    block = encoder.blocks[0]
    if block.gamma_1 is not None or block.attn.relative_position_bias_table is not None \
            or encoder.rel_pos_bias is not None or encoder.pos_embed is None:
        raise NotExportable("the EVA ViT uses layer scale or relative positions, which "
                            "transformers' Blip2VisionModel does not have")
    if block.attn.q_bias is None:
        raise NotExportable("the EVA ViT has no q/v biases (qkv_bias=False); Blip2VisionModel "
                            "is exported with qkv_bias=True only")
    bert = model.Qformer.bert.config
    llm = model.opt_model
    head, embed = llm.get_output_embeddings().weight, llm.get_input_embeddings().weight
    return Arch(
        vision_depth=len(encoder.blocks), vision_width=encoder.embed_dim,
        vision_heads=block.attn.num_heads, vision_mlp=block.mlp.fc1.out_features,
        patch_size=encoder.patch_embed.patch_size[0], image_size=encoder.patch_embed.img_size[0],
        qformer_layers=bert.num_hidden_layers, cross_attention_freq=bert.cross_attention_freq,
        num_query_tokens=model.query_tokens.shape[1], llm_family=family,
        llm_keys=tuple(llm.state_dict()),
        llm_tied=head is embed or (head.shape == embed.shape and torch.equal(head, embed)))


# --- the key table ---------------------------------------------------------------------------
# (LAVIS key pattern, Hugging Face key pattern). ``{i}`` is a layer index. Rows with None on
# the right are consumed by a special rule (see ``convert``).
_WB = ("weight", "bias")
VISION_TABLE: list[tuple[str, str | None]] = [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    *[(f"visual_encoder.patch_embed.proj.{p}", f"vision_model.embeddings.patch_embedding.{p}")
      for p in _WB],
    *[(f"visual_encoder.blocks.{{i}}.{a}.{p}", f"vision_model.encoder.layers.{{i}}.{b}.{p}")
      for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"),
                   ("attn.proj", "self_attn.projection"), ("mlp.fc1", "mlp.fc1"),
                   ("mlp.fc2", "mlp.fc2")) for p in _WB],
    ("visual_encoder.blocks.{i}.attn.qkv.weight", "vision_model.encoder.layers.{i}.self_attn.qkv.weight"),
    ("visual_encoder.blocks.{i}.attn.q_bias", None),  # with v_bias -> self_attn.qkv.bias
    ("visual_encoder.blocks.{i}.attn.v_bias", None),
    *[(f"ln_vision.{p}", f"vision_model.post_layernorm.{p}") for p in _WB],
]
QFORMER_TABLE: list[tuple[str, str | None]] = [
    ("query_tokens", "query_tokens"),
    *[(f"Qformer.bert.embeddings.LayerNorm.{p}", f"qformer.layernorm.{p}") for p in _WB],
    ("Qformer.bert.embeddings.position_ids", None),  # constant buffer: checked, dropped
    *[(f"Qformer.bert.encoder.layer.{{i}}.{a}.{p}", f"qformer.encoder.layer.{{i}}.{b}.{p}")
      for a, b in (("attention.self.query", "attention.attention.query"),
                   ("attention.self.key", "attention.attention.key"),
                   ("attention.self.value", "attention.attention.value"),
                   ("attention.output.dense", "attention.output.dense"),
                   ("attention.output.LayerNorm", "attention.output.LayerNorm"),
                   ("intermediate_query.dense", "intermediate_query.dense"),
                   ("output_query.dense", "output_query.dense"),
                   ("output_query.LayerNorm", "output_query.LayerNorm")) for p in _WB],
]
CROSS_TABLE: list[tuple[str, str | None]] = [  # only on layers i % cross_attention_freq == 0
    (f"Qformer.bert.encoder.layer.{{i}}.crossattention.{a}.{p}",
     f"qformer.encoder.layer.{{i}}.crossattention.{b}.{p}")
    for a, b in (("self.query", "attention.query"), ("self.key", "attention.key"),
                 ("self.value", "attention.value"), ("output.dense", "output.dense"),
                 ("output.LayerNorm", "output.LayerNorm")) for p in _WB]
PROJ_TABLE: list[tuple[str, str | None]] = [
    *[(f"opt_proj.{p}", f"language_projection.{p}") for p in _WB]]
LLM_PREFIX, HF_LLM_PREFIX = "opt_model.", "language_model."


def key_table(arch: Arch) -> dict[str, str | None]:
    """Every LAVIS key of this architecture -> its Hugging Face key (None: special rule)."""
    rows: list[tuple[str, str | None]] = []

    def add(table: Iterable[tuple[str, str | None]], layers: Iterable[int] = ()) -> None:
        layers = list(layers)
        for src, dst in table:
            if "{i}" not in src:
                rows.append((src, dst))
                continue
            for i in layers:
                rows.append((src.format(i=i), dst.format(i=i) if dst else None))

    add(VISION_TABLE, range(arch.vision_depth))
    add(QFORMER_TABLE, range(arch.qformer_layers))
    add(CROSS_TABLE, [i for i in range(arch.qformer_layers) if i % arch.cross_attention_freq == 0])
    add(PROJ_TABLE)
    # the LLM key for key; a tied head stays in our state dict and is written only when untied
    add((LLM_PREFIX + key, HF_LLM_PREFIX + key) for key in arch.llm_keys)
    return dict(rows)


def _head_key(arch: Arch) -> str:
    return LLM_PREFIX + next(k for k in arch.llm_keys if k.startswith("lm_head."))


def _embed_key(arch: Arch) -> str:
    return LLM_PREFIX + next(k for k in arch.llm_keys if k.endswith("embed_tokens.weight"))


def expected_keys(arch: Arch) -> set[str]:
    return set(key_table(arch))


def check_keys(state: Mapping[str, Any], arch: Arch, source: str = "the state dict") -> None:
    """Raise ``ExportKeyError`` naming every missing and every left-over key."""
    expected = expected_keys(arch)
    missing = sorted(expected - set(state))
    extra = sorted(set(state) - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
        if extra:
            parts.append(f"{len(extra)} not mapped to Blip2ForConditionalGeneration: "
                         f"{', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
        raise ExportKeyError(f"{source} does not match the exported architecture: "
                             + "; ".join(parts))


def convert(state: Mapping[str, torch.Tensor], arch: Arch, dtype: torch.dtype | None = None,
            source: str = "the state dict") -> dict[str, torch.Tensor]:
    """The Hugging Face state dict for a checked LAVIS stage-2 state dict.

    ``dtype``: cast floating tensors (None keeps them). Tied LLM heads are not written
    (transformers ties ``lm_head`` to ``embed_tokens`` on load).
    """
    check_keys(state, arch, source)
    table = key_table(arch)
    out: dict[str, torch.Tensor] = {}
    for src, dst in table.items():
        if dst is None or (arch.llm_tied and src == _head_key(arch)):
            continue
        out[dst] = state[src]
    for i in range(arch.vision_depth):
        prefix = f"visual_encoder.blocks.{i}.attn"
        q, v = state[f"{prefix}.q_bias"], state[f"{prefix}.v_bias"]
        out[f"vision_model.encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat(
            (q, torch.zeros_like(v), v))
    positions = state["Qformer.bert.embeddings.position_ids"]
    if not torch.equal(positions.flatten().cpu(), torch.arange(positions.numel())):
        raise ExportKeyError(f"{source}: Qformer.bert.embeddings.position_ids is not 0..n-1")
    if arch.llm_tied and not torch.equal(state[_head_key(arch)], state[_embed_key(arch)]):
        raise ExportKeyError(f"{source}: {_head_key(arch)} differs from {_embed_key(arch)} "
                             "although the model ties them")
    result = {}
    for key, tensor in out.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        result[key] = tensor.contiguous().clone()
    return result


# --- configs ---------------------------------------------------------------------------------
_LLM_DROP = ("_name_or_path", "transformers_version", "architectures", "torch_dtype",
             "_commit_hash", "use_cache")


def hf_config(model: Any, arch: Arch, image_token_index: int, dtype: str) -> dict[str, Any]:
    """``config.json`` for ``Blip2ForConditionalGeneration`` (a plain dict: the exporter runs
    on the LAVIS stack's transformers, which predates BLIP-2)."""
    bert = model.Qformer.bert.config
    text = {k: v for k, v in model.opt_model.config.to_dict().items() if k not in _LLM_DROP}
    text.update(model_type=arch.llm_family, tie_word_embeddings=arch.llm_tied)
    vision = dict(
        model_type="blip_2_vision_model", hidden_size=arch.vision_width,
        intermediate_size=arch.vision_mlp, num_hidden_layers=arch.vision_depth,
        num_attention_heads=arch.vision_heads, image_size=arch.image_size,
        patch_size=arch.patch_size, hidden_act="gelu", layer_norm_eps=1e-6,
        attention_dropout=0.0, initializer_range=1e-10, qkv_bias=True)
    qformer = dict(
        model_type="blip_2_qformer", vocab_size=bert.vocab_size, hidden_size=bert.hidden_size,
        num_hidden_layers=bert.num_hidden_layers, num_attention_heads=bert.num_attention_heads,
        intermediate_size=bert.intermediate_size, hidden_act=bert.hidden_act,
        hidden_dropout_prob=bert.hidden_dropout_prob,
        attention_probs_dropout_prob=bert.attention_probs_dropout_prob,
        max_position_embeddings=bert.max_position_embeddings,
        initializer_range=bert.initializer_range, layer_norm_eps=bert.layer_norm_eps,
        pad_token_id=bert.pad_token_id, position_embedding_type="absolute",
        cross_attention_frequency=arch.cross_attention_freq,
        encoder_hidden_size=arch.vision_width, use_qformer_text_input=False)
    return dict(architectures=["Blip2ForConditionalGeneration"], model_type="blip-2",
                num_query_tokens=arch.num_query_tokens, image_token_index=image_token_index,
                image_text_hidden_size=256, initializer_factor=1.0, initializer_range=0.02,
                use_decoder_only_language_model=True, torch_dtype=dtype, vision_config=vision,
                qformer_config=qformer, text_config=text, tie_word_embeddings=arch.llm_tied)


def generation_config(model: Any, settings: Mapping[str, Any], prompt_ids: int) -> dict[str, Any]:
    """``generation_config.json`` from the model's ``generate`` settings.

    LAVIS's ``min_length`` counts BOS + prompt; transformers' BLIP-2 also counts the image
    tokens, so the equivalent is ``min_new_tokens``. Lengths past the prompt are
    ``max_new_tokens`` in both.
    """
    tok = model.opt_tokenizer
    out: dict[str, Any] = dict(
        bos_token_id=model.opt_model.config.bos_token_id, eos_token_id=model.eos_token_id,
        pad_token_id=tok.pad_token_id, do_sample=False,
        num_beams=int(settings.get("num_beams", 5)),
        max_new_tokens=int(settings.get("max_length", 200)),
        repetition_penalty=float(settings.get("repetition_penalty", 1.0)),
        length_penalty=float(settings.get("length_penalty", 1.0)),
        no_repeat_ngram_size=int(settings.get("no_repeat_ngram_size", 0)))
    min_new = int(settings.get("min_length", 1)) - prompt_ids
    if min_new > 0:
        out["min_new_tokens"] = min_new
    return out

