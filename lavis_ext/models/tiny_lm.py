"""A tiny language model (OPT, Llama or Qwen2 architecture) and its byte-level BPE tokenizer,
built locally on first use.

BLIP-2 freezes a pre-trained LLM. At toy scale a random frozen LM cannot be steered by a few
query tokens, so the tiny LM is first trained briefly on caption text (seconds on CPU), then
frozen, standing in for OPT (see shared/facts/tiny-captioner.md). The result is an ordinary
Hugging Face folder (config, weights, tokenizer), cached under ``$LAVIS_EXT_CACHE`` by a hash
of everything that defines it, and identical for the same seed.

``family`` picks the architecture and the tokenizer's conventions, which are the family's:
OPT (BOS "</s>" prepended, "<pad>"), Llama (BOS "<s>" prepended, EOS "</s>", no pad token) and
Qwen2 (no BOS, "<|endoftext|>" as EOS and pad, tied embeddings). Llama and Qwen2 need the
current stack (transformers >= 4.46).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from lavis_ext.errors import InputError
from lavis_ext.models.paths import cache_dir, require_file

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0-3
# Per family: the special tokens (ids 0..n-1, in this order) and which of them is which.
FAMILIES: dict[str, dict[str, Any]] = {
    "opt": dict(special=SPECIAL_TOKENS, bos="</s>", eos="</s>", unk="</s>", pad="<pad>"),
    "llama": dict(special=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>",
                  pad=None),
    "qwen2": dict(special=["<|endoftext|>"], bos=None, eos="<|endoftext|>", unk=None,
                  pad="<|endoftext|>"),
}
DEFAULTS: dict[str, Any] = dict(family="opt", vocab_size=512, hidden_size=128, num_layers=2,
                                num_heads=4, ffn_dim=512, max_positions=512, pretrain_steps=300,
                                batch_size=32, lr=1e-3, seed=0, corpus=None,
                                corpus_size=2000, max_prefix=16, content_prefix=0.9)


def default_corpus(size: int = 2000, seed: int = 0) -> list[str]:
    """Rule-based AU and emotion captions for random AU sets and emotions."""
    from lavis_ext.captions.rules import au_caption, emotion_caption, neutral_au_caption
    from lavis_ext.facs import AU_SUBSETS, EMOTION_NAMES

    rng = random.Random(seed)
    aus = AU_SUBSETS["paper27"]
    texts = [neutral_au_caption()]
    for i in range(size):
        if i % 4 == 3:
            k = 2 if rng.random() < 0.3 else 1
            text = emotion_caption(rng.sample(EMOTION_NAMES, k))
        else:
            text = au_caption(sorted(rng.sample(aus, rng.randint(1, 5))))
        if text:
            texts.append(text)
    return texts


def read_corpus(path: str | os.PathLike) -> list[str]:
    """One caption per line, or a records JSON file (its ``caption`` lists)."""
    path = require_file(path, what="tiny LM corpus", key="model.tiny_lm.corpus")
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        return [c for record in json.loads(text) for c in record.get("caption", [])]
    return [line.strip() for line in text.splitlines() if line.strip()]


def train_tokenizer(corpus: Iterable[str], vocab_size: int, out_dir: Path,
                    family: str = "opt") -> None:
    """Byte-level BPE with the family's special tokens: for OPT saved as a slow GPT2 tokenizer
    that prepends BOS (as OPT's); for the others as a fast tokenizer (tokenizer.json) that
    prepends BOS only where the family does (Llama yes, Qwen2 no)."""
    from tokenizers import ByteLevelBPETokenizer

    spec = _family(family)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(corpus), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=spec["special"], show_progress=False)
    if family != "opt":
        _save_fast_tokenizer(bpe, spec, out_dir)
        return
    bpe.save_model(str(out_dir))
    config = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "errors": "replace",
              "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
              "pad_token": "<pad>", "model_max_length": 1024}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=1))


def _family(family: str) -> dict[str, Any]:
    if family not in FAMILIES:
        raise InputError(f"model.tiny_lm.family must be one of {sorted(FAMILIES)}, got "
                         f"{family!r}")
    return FAMILIES[family]


def _save_fast_tokenizer(bpe: Any, spec: dict[str, Any], out_dir: Path) -> None:
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = bpe._tokenizer
    if spec["bos"]:
        bos_id = spec["special"].index(spec["bos"])
        backend.post_processor = TemplateProcessing(
            single=f"{spec['bos']} $A", pair=f"{spec['bos']} $A {spec['bos']} $B",
            special_tokens=[(spec["bos"], bos_id)])
    else:
        backend.post_processor = None
    names = {f"{k}_token": spec[k] for k in ("bos", "eos", "unk", "pad") if spec[k]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=1024,
                                        **names)
    tokenizer.save_pretrained(str(out_dir))


def _pretrain(model: torch.nn.Module, tokenizer: Any, corpus: Sequence[str], steps: int,
              batch_size: int, lr: float, seed: int, max_prefix: int,
              content_prefix: float = 0.0, end: str = "\n",
              n_special: int = len(SPECIAL_TOKENS)) -> list[float]:
    """Teach the LM the caption language the way the captioner trains: text + ``end`` (OPT:
    "\\n"; other families: their EOS token), after BOS where the tokenizer adds one.

    Each text follows a prefix that carries no loss. A real LLM has seen every kind of
    context before a sentence and reads it: with probability ``content_prefix`` the prefix is
    a shuffled, thinned bag of the text's own tokens (the LM learns to say what its context
    names), otherwise 0..``max_prefix`` random tokens (it learns to ignore noise). An LM
    trained on text alone is derailed by BLIP-2's query prefix; one trained with random
    prefixes only learns to ignore it, and the captioner then takes ~1,000 steps before it
    starts to look at the image (measured: AU F1 from captions 0.41 vs 0.82 after 1,100
    steps, docs/models.md).
    """
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    limit = model.config.max_position_embeddings - max_prefix
    vocab = len(tokenizer)
    losses = []
    token_ids: dict[str, list[int]] = {}  # each corpus line tokenized once (slow tokenizer)
    model.train()
    for _ in range(steps):
        rows, targets = [], []
        for text in (rng.choice(corpus) for _ in range(batch_size)):
            ids = token_ids.get(text)
            if ids is None:
                ids = token_ids[text] = tokenizer(text + end).input_ids[:limit]
            if rng.random() < content_prefix:
                words = list(dict.fromkeys(i for i in ids if i >= n_special))
                rng.shuffle(words)
                prefix = [w for w in words if rng.random() < 0.8][:max_prefix]
            else:
                prefix = [rng.randrange(n_special, vocab)
                          for _ in range(rng.randint(0, max_prefix))]
            rows.append(prefix + ids)
            targets.append([-100] * len(prefix) + ids)
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _tiny_config(family: str, tokenizer: Any, vocab_size: int, cfg: dict[str, Any]) -> Any:
    """The family's architecture at tiny size (grouped-query attention for Llama and Qwen2,
    as their current models use; Qwen2 ties its output layer to the embeddings)."""
    from transformers import OPTConfig

    if family == "opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=cfg["hidden_size"],
                         num_hidden_layers=cfg["num_layers"], ffn_dim=cfg["ffn_dim"],
                         num_attention_heads=cfg["num_heads"],
                         max_position_embeddings=cfg["max_positions"],
                         word_embed_proj_dim=cfg["hidden_size"], dropout=0.0,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=2, eos_token_id=2)
    from lavis_ext.models.llm import require_generic_support

    require_generic_support(family, f"tiny ({family})")
    from transformers import AutoConfig

    heads = cfg["num_heads"]
    common = dict(vocab_size=vocab_size, hidden_size=cfg["hidden_size"],
                  intermediate_size=cfg["ffn_dim"], num_hidden_layers=cfg["num_layers"],
                  num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                  max_position_embeddings=cfg["max_positions"])
    eos = tokenizer.eos_token_id
    if family == "llama":
        return AutoConfig.for_model("llama", bos_token_id=tokenizer.bos_token_id,
                                    eos_token_id=eos, tie_word_embeddings=False, **common)
    return AutoConfig.for_model("qwen2", bos_token_id=eos, eos_token_id=eos,
                                tie_word_embeddings=True, **common)


def build_tiny_lm(out_dir: str | os.PathLike, **settings: Any) -> Path:
    """Build tokenizer + tiny LM of ``family`` (+ short pre-training) into ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, OPTForCausalLM

    from lavis_ext.models.llm_family import CAUSAL, OPT

    cfg = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    family = cfg["family"]
    spec = _family(family)
    corpus = read_corpus(cfg["corpus"]) if cfg["corpus"] else default_corpus(
        cfg["corpus_size"], cfg["seed"])
    if not corpus:
        raise InputError("tiny LM corpus is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(corpus, cfg["vocab_size"], out, family)
    if family == "opt":
        tokenizer = AutoTokenizer.from_pretrained(str(out), use_fast=False)
        end = OPT.end_of_text(tokenizer)
    else:
        tokenizer = CAUSAL.prepare_tokenizer(AutoTokenizer.from_pretrained(str(out)))
        end = CAUSAL.end_of_text(tokenizer)
    torch.manual_seed(cfg["seed"])
    # ``spare_ids``: unused embedding rows past the tokenizer, as OPT has (50,272 rows for
    # 50,265 tokens); transformers' BLIP-2 puts its ``<image>`` token there (export-hf).
    config = _tiny_config(family, tokenizer,
                          len(tokenizer) + int(cfg.get("spare_ids") or 0), cfg)
    model = (OPTForCausalLM(config) if family == "opt"
             else AutoModelForCausalLM.from_config(config))
    losses = _pretrain(model, tokenizer, corpus, cfg["pretrain_steps"], cfg["batch_size"],
                       cfg["lr"], cfg["seed"], cfg["max_prefix"], cfg["content_prefix"],
                       end, len(spec["special"])) if cfg["pretrain_steps"] else []
    model.save_pretrained(str(out))
    info = {"settings": {k: v for k, v in cfg.items() if k != "corpus"},
            "corpus_lines": len(corpus), "pretrain_loss_first": losses[:1],
            "pretrain_loss_last": losses[-1:]}
    (out / "lavis_ext_tiny_lm.json").write_text(json.dumps(info, indent=1))
    return out


def tiny_lm_key(**settings: Any) -> str:
    """Cache key: a hash of the settings and of the corpus content."""
    cfg = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if cfg["family"] == "opt":  # the key OPT LMs had before families existed
        del cfg["family"]
    if cfg["corpus"]:
        path = require_file(cfg["corpus"], what="tiny LM corpus", key="model.tiny_lm.corpus")
        cfg["corpus"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    blob = json.dumps(cfg, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tiny_lm_dir(**settings: Any) -> Path:
    """The cached tiny LM folder for these settings, built if absent (atomic for concurrent
    ranks: each builds into a temp folder, the first rename wins)."""
    family = settings.get("family") or DEFAULTS["family"]
    _family(family)
    target = cache_dir() / f"tiny_{family}-{tiny_lm_key(**settings)}"
    if (target / "config.json").exists():
        return target
    logging.info("building the tiny LM into %s", target)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f".tiny_{family}-"))
    try:
        build_tiny_lm(tmp, **settings)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
