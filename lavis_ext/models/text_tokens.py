"""Token ids of training captions, each distinct text tokenized once per run.

A training run shows every caption again at each pass over the data, and the slow (Python)
GPT-2 tokenizer that LAVIS uses for OPT costs ~7 ms of a tiny model's ~85 ms step on 2 CPU
cores. :class:`CaptionTokens` keeps each text's ids (as the tokenizer gives them for that text
alone, truncation included) and pads a batch on the right, which is what one batched
tokenizer call with ``padding="longest"`` returns.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch

DEFAULT_SIZE = 200_000  # texts kept (least recently used dropped first): ~50 MB at most


class CaptionTokens:
    """``tokenizer(texts, padding="longest", truncation=True, max_length=n)`` for right
    padding, with each text's ids remembered."""

    def __init__(self, tokenizer: Any, max_length: int, size: int = DEFAULT_SIZE):
        if tokenizer.pad_token_id is None:
            raise ValueError("CaptionTokens needs a tokenizer with a pad token")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.size = int(size)
        self._ids: OrderedDict[str, list[int]] = OrderedDict()

    def ids(self, text: str) -> list[int]:
        found = self._ids.get(text)
        if found is None:
            found = self.tokenizer(text, truncation=True, max_length=self.max_length).input_ids
            self._ids[text] = found
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
        else:
            self._ids.move_to_end(text)
        return found

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), batch x longest, padded on the right."""
        rows = [self.ids(t) for t in texts]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows],
                            dtype=torch.long)
        return input_ids, mask
