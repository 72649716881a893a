"""The frozen LLM (OPT) and its tokenizer: from a local folder, the HF cache, the tiny LM, or
a random-init full-size architecture for timing.

``opt_model`` values: a local folder; a hub name (``facebook/opt-2.7b``; used from the HF
cache, downloaded only when the hub is reachable and offline mode is off); ``tiny`` (built
locally, see tiny_lm.py); ``random:opt-2.7b`` / ``random:opt-6.7b`` (no weights).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from lavis_ext.models.paths import MissingModelFileError

OPT_SHAPES: dict[str, dict[str, int]] = {
    "opt-2.7b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                     ffn_dim=10240, word_embed_proj_dim=2560),
    "opt-6.7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                     ffn_dim=16384, word_embed_proj_dim=4096),
}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_llm_dtype(name: str | None = "auto", device: str | None = None) -> torch.dtype:
    """``auto``: float32 on CPU (CPU kernels need it), bf16 on GPUs that have it, else fp16."""
    name = (name or "auto").lower()
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"model.llm_dtype must be auto or one of {sorted(DTYPES)}, "
                             f"got {name!r}")
        return DTYPES[name]
    on_gpu = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if not on_gpu:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in
               ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _load_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """from_pretrained on a folder, or a hub name from the cache first; clear error if absent."""
    hint = "Set model.opt_model to a local OPT folder (config.json, weights, tokenizer)."
    if os.path.isdir(name):
        return cls.from_pretrained(name, **kwargs)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise MissingModelFileError(f"LLM folder '{name}' does not exist. {hint}")
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        if _offline():
            raise MissingModelFileError(f"LLM '{name}' is not in the Hugging Face cache and "
                                        f"the hub is off (offline mode). {hint}") from None
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MissingModelFileError(f"LLM '{name}' could not be loaded ({first}). {hint}"
                                    ) from None


def load_llm(opt_model: str, dtype: torch.dtype, tiny_lm: dict[str, Any] | None = None
             ) -> tuple[Any, torch.nn.Module]:
    """Return (tokenizer, OPTForCausalLM) with LAVIS's OPT class (it accepts query_embeds)."""
    from lavis.models.blip2_models.modeling_opt import OPTConfig, OPTForCausalLM
    from transformers import AutoTokenizer

    from lavis_ext.models.tiny_lm import tiny_lm_dir

    if not opt_model:
        raise MissingModelFileError("model.opt_model is not set: give a local OPT folder, a "
                                    "hub name, 'tiny' or 'random:opt-2.7b'.")
    if opt_model == "tiny":
        folder = str(tiny_lm_dir(**(tiny_lm or {})))
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
        model = OPTForCausalLM.from_pretrained(folder, torch_dtype=dtype)
    elif opt_model.startswith("random:"):
        shape = opt_model.split(":", 1)[1]
        if shape not in OPT_SHAPES:
            raise ValueError(f"model.opt_model: unknown architecture {shape!r}; known: "
                             f"{sorted(OPT_SHAPES)}")
        folder = str(tiny_lm_dir(**{**(tiny_lm or {}), "pretrain_steps": 0}))
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=False)
        config = OPTConfig(vocab_size=50272, max_position_embeddings=2048, pad_token_id=1,
                           bos_token_id=2, eos_token_id=2, **OPT_SHAPES[shape])
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = OPTForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    else:
        tokenizer = _load_pretrained(AutoTokenizer, opt_model, use_fast=False)
        model = _load_pretrained(OPTForCausalLM, opt_model, torch_dtype=dtype)
    if not getattr(tokenizer, "add_bos_token", True) and tokenizer.bos_token_id is None:
        logging.warning("LLM tokenizer adds no BOS token: an empty prompt would give empty "
                        "input ids; lavis_ext's generate inserts BOS itself.")
    return tokenizer, model
