"""``expblip explain``: Q-Former cross-attention maps, 5-point AU regions, ATT-COS."""
import numpy as np
import pytest
import torch
from PIL import Image

from lavis_ext.describe.attention import (CrossAttentionCapture, TokenGrid, query_attention,
                                          to_maps, token_grid)


def test_capture_reads_every_cross_attention_layer_and_rows_sum_to_one(tiny_captioner):
    model = tiny_captioner.model
    images = [Image.new("RGB", (112, 112), (200, 120, 90)), Image.new("RGB", (90, 90))]
    with CrossAttentionCapture(model) as capture:
        captions = tiny_captioner.caption(images, num_beams=1, max_length=5)
    probs = capture.probabilities()
    layers = model.Qformer.bert.config.num_hidden_layers  # cross_attention_freq 1: every one
    heads = model.Qformer.bert.config.num_attention_heads
    queries = model.query_tokens.shape[1]
    assert len(captions) == 2
    assert probs.shape == (layers, 2, heads, queries, 49)  # tiny encoder: 7x7, no CLS
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-4)
    # The hooks are gone afterwards: another call records nothing more.
    tiny_captioner.caption(images[:1], num_beams=1, max_length=3)
    assert capture.probabilities().shape[1] == 2
    maps = to_maps(probs, token_grid(49, model.visual_encoder))
    assert maps[0].queries.shape == (queries, 7, 7) and maps[0].mean.shape == (7, 7)
    assert maps[0].mean.sum() == pytest.approx(1.0, abs=1e-4)
    # The Q-Former alone (no caption) gives the same maps as the caption pass.
    tensor = torch.stack([tiny_captioner.image_processor(i) for i in images])
    alone = query_attention(model, tensor)
    assert np.allclose(alone[1].mean, maps[1].mean, atol=1e-5)


def test_grid_with_and_without_cls_and_the_cls_share_dropped():
    assert token_grid(49) == TokenGrid(7, 7, False)
    assert token_grid(257) == TokenGrid(16, 16, True)
    with pytest.raises(Exception):
        token_grid(50 + 3)
    # One query looking at the CLS half the time and at patch (row 2, col 5) the rest.
    probs = torch.zeros(1, 1, 1, 1, 17)
    probs[..., 0] = 0.5
    probs[..., 1 + 2 * 4 + 1] = 0.5
    (maps,) = to_maps(probs, token_grid(17))
    assert maps.mean.shape == (4, 4) and maps.mean[2, 1] == pytest.approx(0.5)
    assert maps.mean.sum() == pytest.approx(0.5)


def test_eva_encoder_declares_its_grid_and_cls():
    from lavis_ext.models.vision import build_tiny_eva

    encoder = build_tiny_eva(56, patch_size=14, width=16, depth=1, num_heads=2)
    tokens = encoder(torch.zeros(1, 3, 56, 56))
    assert token_grid(tokens.shape[1], encoder) == TokenGrid(4, 4, True)
