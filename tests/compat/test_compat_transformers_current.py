"""LAVIS's OPT generates with query embeddings on both stacks (transformers 4.26.1 and current).

On current transformers these fail without the ``transformers_current.*`` records: ``import
lavis`` (moved helpers), ``opt_model.generate`` (no GenerationMixin), beam search (query_embeds
expanded twice) and the cache (passed as ``past_key_values``, read as ``past``).
"""
from __future__ import annotations

import pytest
import torch

import lavis_ext
import lavis_ext.compat as compat
from lavis_ext.compat.transformers_current import undo_second_expansion


@pytest.fixture(scope="module")
def tiny_captioner():
    lavis_ext.ensure_registered()
    from lavis.models import load_model_and_preprocess

    torch.manual_seed(0)
    model, _, _ = load_model_and_preprocess("exp_blip", "tiny", is_eval=True)
    return model


def _images(model, n: int) -> torch.Tensor:
    size = model.visual_encoder.image_size
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_opt_has_generate() -> None:
    lavis_ext.ensure_registered()
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM
    from transformers.generation import GenerationMixin

    assert issubclass(OPTForCausalLM, GenerationMixin)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_generate_uses_the_cache_and_beams_work(tiny_captioner, num_beams: int) -> None:
    model = tiny_captioner
    steps: list[tuple[int, bool]] = []
    forward = model.opt_model.forward

    def recording_forward(*args, **kwargs):
        steps.append((kwargs["input_ids"].shape[1], kwargs.get("query_embeds") is not None))
        return forward(*args, **kwargs)

    model.opt_model.forward = recording_forward
    try:
        captions = model.generate({"image": _images(model, 2)}, num_beams=num_beams,
                                  max_length=8, min_length=8, num_captions=num_beams)
    finally:
        del model.opt_model.forward
    assert len(captions) == 2 * num_beams and all(isinstance(c, str) for c in captions)
    assert steps[0] == (1, True) and len(steps) >= 7
    if compat.requirement_met(compat.CURRENT_TRANSFORMERS):
        # the first step reads the prompt (BOS) with the query embeddings; every later one only
        # the newest token, from the cache
        assert all(step == (1, False) for step in steps[1:]), steps
    else:
        # LAVIS 1.0.2 on 4.26.1 as shipped (left so for exact reproduction): 4.26's generate
        # passes the cache as past_key_values too, so every step runs the whole sequence again
        assert steps[1:] == [(n, True) for n in range(2, len(steps) + 1)], steps


def test_beam_search_equals_for_each_image_alone(tiny_captioner) -> None:
    # rows of query_embeds must stay with their own image through the beams
    model = tiny_captioner
    images = _images(model, 3)
    together = model.generate({"image": images}, num_beams=3, max_length=10)
    alone = [model.generate({"image": images[i:i + 1]}, num_beams=3, max_length=10)[0]
             for i in range(3)]
    assert together == alone


def test_undo_second_expansion() -> None:
    queries = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    once = queries.repeat_interleave(5, dim=0)  # the caller's expansion for 5 beams
    twice = once.repeat_interleave(5, dim=0)  # current generate's own expansion
    assert torch.equal(undo_second_expansion(twice, 10), once)
    assert undo_second_expansion(once, 10) is once
    with pytest.raises(ValueError, match="7 input rows"):
        undo_second_expansion(twice, 7)
    different = once.clone()
    different[1] += 1  # runs of rows that are not copies: no guessing which row is whose
    with pytest.raises(ValueError, match="not copies"):
        undo_second_expansion(different, 5)
