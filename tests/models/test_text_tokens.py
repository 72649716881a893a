"""CaptionTokens: each training text tokenized once, the same ids and mask as the batch call."""
from __future__ import annotations

import pytest
import torch

from lavis_ext.models.text_tokens import CaptionTokens


class _Counting:
    """The tiny captioner's tokenizer, counting its calls."""

    def __init__(self, tokenizer):
        self.inner, self.calls = tokenizer, 0
        self.pad_token_id = tokenizer.pad_token_id

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_same_ids_and_mask_as_one_batched_call(tiny_stage2) -> None:
    model = tiny_stage2[0]
    tokenizer = model.opt_tokenizer
    tokenizer.padding_side = "right"
    long = " ".join(["The person raises the inner brow and drops the jaw."] * 20)
    texts = ["The person smiles.\n", long + "\n", "A frown.\n", "The person smiles.\n"]
    counting = _Counting(tokenizer)
    tokens = CaptionTokens(counting, max_length=model.max_txt_len)
    for _ in range(2):  # the second pass comes from memory
        ids, mask = tokens(texts)
        want = tokenizer(texts, return_tensors="pt", padding="longest", truncation=True,
                         max_length=model.max_txt_len)
        assert torch.equal(ids, want.input_ids) and torch.equal(mask, want.attention_mask)
    assert ids.shape[1] == model.max_txt_len  # the long text was cut
    assert counting.calls == 3  # three distinct texts, each once


def test_oldest_text_dropped_past_the_size(tiny_stage2) -> None:
    counting = _Counting(tiny_stage2[0].opt_tokenizer)
    tokens = CaptionTokens(counting, max_length=32, size=2)
    for text in ("a", "b", "a", "c", "a", "b"):
        tokens([text])
    assert counting.calls == 4  # a, b, c, then b again (dropped when c came)
    with pytest.raises(ValueError, match="pad token"):
        CaptionTokens(type("T", (), {"pad_token_id": None})(), 8)


def test_forward_loss_as_with_one_batched_tokenizer_call(tiny_stage2, images, monkeypatch):
    """The captioner's loss with the remembered ids equals its loss with the batched
    tokenizer call that the forward made before the cache."""
    model = tiny_stage2[0]
    model._token_cache = None
    samples = {"image": images, "text_input": ["The person smiles.", "A frown.", "Sad eyes."]}
    model.eval()
    with torch.no_grad():
        cached = model(samples)["loss"]
        assert len(model._token_cache._ids) == 3

        def batched(self, tokenizer):
            def call(texts):
                out = tokenizer(texts, return_tensors="pt", padding="longest", truncation=True,
                                max_length=self.max_txt_len)
                return out.input_ids, out.attention_mask
            return call

        monkeypatch.setattr(type(model), "_caption_tokens", batched)
        assert torch.equal(model(samples)["loss"], cached)
