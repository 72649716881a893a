"""The plugin's OPT (lavis_ext/models/opt.py) decodes with its KV cache on both stacks, gives the
captions it gives without the cache, trains through the same inputs_embeds forward as other
causal LMs with LAVIS's Blip2OPT loss, and leaves LAVIS's own OPT class as shipped.

Without ``ExpBlipOPTForCausalLM`` (LAVIS's class as ``opt_model``) the step-length test fails
on the paper stack: every step re-runs the whole sequence (``test_lavis_stock_opt_reruns...``
shows that LAVIS's class still does).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

import lavis_ext  # noqa: F401  (registers the models)
from lavis_ext.models import llm_family
from lavis_ext.models.llm import GENERIC_MIN_TRANSFORMERS
from lavis_ext.models.opt import ExpBlipOPTForCausalLM, legacy_past, undo_second_expansion


def _current_stack() -> bool:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(GENERIC_MIN_TRANSFORMERS)


current_only = pytest.mark.skipif(not _current_stack(),
                                  reason="transformers 4.26 (paper stack): no Cache classes, "
                                         "and generate cannot start from inputs_embeds")
paper_only = pytest.mark.skipif(_current_stack(), reason="LAVIS's stock OPT generates on "
                                "transformers 4.26 only (current: no GenerationMixin)")


@pytest.fixture()
def model(tiny_stage2):
    return tiny_stage2[0]


def _positions(kwargs: dict[str, Any]) -> int:
    """The number of sequence positions one LLM call computes (queries included)."""
    total = 0
    for key in ("input_ids", "inputs_embeds", "query_embeds"):
        value = kwargs.get(key)
        if value is not None:
            total += value.shape[1]
    return total


class StepRecorder:
    """Records the positions of every call of the LLM (a forward pre-hook, so generate's
    ``self(**inputs)`` is seen whatever the class)."""

    def __init__(self, llm: torch.nn.Module):
        self.lengths: list[int] = []
        self._handle = llm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        self.lengths.append(_positions(kwargs))

    def __enter__(self) -> "StepRecorder":
        return self

    def __exit__(self, *_: Any) -> None:
        self._handle.remove()


def _prefix_length(model) -> int:
    """Query tokens + BOS (the tiny model has no prompt)."""
    return model.query_tokens.shape[1] + 1


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_feeds_one_new_position_per_step(model, images, num_beams: int) -> None:
    assert isinstance(model.opt_model, ExpBlipOPTForCausalLM)
    new = 6
    with StepRecorder(model.opt_model) as steps:
        captions = model.generate({"image": images}, num_beams=num_beams, max_length=new,
                                  min_length=new + 1)  # + BOS: exactly `new` tokens
    assert len(captions) == images.shape[0]
    assert steps.lengths == [_prefix_length(model)] + [1] * (new - 1), steps.lengths


@pytest.mark.parametrize("num_beams", [1, 3])
def test_captions_with_the_cache_equal_captions_without(model, images, num_beams: int) -> None:
    cached = model.generate({"image": images}, num_beams=num_beams, max_length=20)
    with StepRecorder(model.opt_model) as steps:
        uncached = model.generate({"image": images}, num_beams=num_beams, max_length=20,
                                  use_cache=False)
    assert cached == uncached
    # without the cache every step runs the whole sequence so far
    assert steps.lengths == list(range(_prefix_length(model), _prefix_length(model)
                                       + len(steps.lengths))), steps.lengths


@current_only
@pytest.mark.parametrize("num_beams", [1, 3])
def test_current_stack_generates_through_inputs_embeds_as_with_query_embeds(
        model, images, monkeypatch, num_beams: int) -> None:
    seen: list[str] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen.append("inputs_embeds" if kwargs.get("inputs_embeds") is not None
                    else "query_embeds" if kwargs.get("query_embeds") is not None else "ids")

    handle = model.opt_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        one_path = model.generate({"image": images}, num_beams=num_beams, max_length=12)
        assert seen[0] == "inputs_embeds" and set(seen[1:]) == {"ids"}, seen
        seen.clear()
        monkeypatch.setattr(llm_family.OptFamily, "generates_from_embeds", False)
        lavis_way = model.generate({"image": images}, num_beams=num_beams, max_length=12)
        assert seen[0] == "query_embeds", seen
    finally:
        handle.remove()
    assert one_path == lavis_way


def test_paper_stack_generates_with_query_embeds() -> None:
    assert llm_family.OPT.generates_from_embeds == _current_stack()


def test_beam_search_equals_for_each_image_alone(model, images) -> None:
    # the queries of each image stay with its own beams (query_embeds expanded by the caller)
    together = model.generate({"image": images}, num_beams=3, max_length=10)
    alone = [model.generate({"image": images[i:i + 1]}, num_beams=3, max_length=10)[0]
             for i in range(images.shape[0])]
    assert together == alone


def test_query_embeds_expanded_by_the_caller_generate_with_beams(model, images) -> None:
    """LAVIS's calling convention (the caller repeats query_embeds for the beams), straight on
    the class: current generate repeats them once more, which the class undoes."""
    prefix = model._llm_prefix(images).to(model.opt_model.dtype)
    ids = model._prompt_ids("", images.shape[0], images.device)
    mask = torch.ones(images.shape[0], prefix.shape[1] + 1, dtype=torch.long)
    with StepRecorder(model.opt_model) as steps:
        out = model.opt_model.generate(input_ids=ids, query_embeds=prefix.repeat_interleave(3, 0),
                                       attention_mask=mask, num_beams=3, max_new_tokens=5,
                                       min_length=6, eos_token_id=model.eos_token_id,
                                       pad_token_id=model.opt_tokenizer.pad_token_id)
    assert out.shape == (images.shape[0], 6)
    assert steps.lengths == [prefix.shape[1] + 1] + [1] * 4


@paper_only
def test_lavis_stock_opt_reruns_the_whole_sequence(model, images) -> None:
    """What the plugin's class fixes: LAVIS's own class, unchanged, reads its cache as `past`
    while generate passes `past_key_values`, so every step runs everything again."""
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

    llm = model.opt_model
    llm.__class__ = OPTForCausalLM
    try:
        with StepRecorder(llm) as steps:
            stock = model.generate({"image": images}, num_beams=3, max_length=6, min_length=7)
    finally:
        llm.__class__ = ExpBlipOPTForCausalLM
    start = _prefix_length(model)
    assert steps.lengths == list(range(start, start + 6)), steps.lengths
    assert stock == model.generate({"image": images}, num_beams=3, max_length=6, min_length=7)


def test_lavis_own_opt_class_is_as_shipped() -> None:
    from lavis.models.blip2_models import modeling_opt
    from transformers import PreTrainedModel

    cls = modeling_opt.OPTForCausalLM
    assert cls.__bases__ == (modeling_opt.OPTPreTrainedModel,)
    assert cls.prepare_inputs_for_generation.__module__ == modeling_opt.__name__
    assert hasattr(cls, "generate") == hasattr(PreTrainedModel, "generate")


def test_checkpoint_keys_are_lavis_opt_keys(model) -> None:
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

    stock = OPTForCausalLM(model.opt_model.config)
    assert list(model.opt_model.state_dict()) == list(stock.state_dict())
    assert "opt_model.model.decoder.layers.0.self_attn.q_proj.weight" in model.state_dict()


@pytest.mark.parametrize("prompt", ["", "a face:"])
def test_training_loss_equals_lavis_blip2opt_forward(model, images, prompt: str) -> None:
    """OPT trains through ExpBlip._embeds_forward (the path of every causal LM); on the same
    batch its loss is exactly LAVIS's Blip2OPT.forward's."""
    from lavis.models.blip2_models.blip2_opt import Blip2OPT

    texts = ["A face with raised brows.", "It is a person who drops jaw and raises cheek.",
             "Smile."]
    saved = model.prompt, model.prompt_length
    model.prompt = prompt
    model.prompt_length = model.opt_tokenizer(prompt, return_tensors="pt").attention_mask.sum(1)
    try:
        samples = {"image": images, "text_input": [prompt + t for t in texts]}
        with torch.no_grad():
            ours = model(samples)["loss"]
            lavis = Blip2OPT.forward(model, samples)["loss"]
    finally:
        model.prompt, model.prompt_length = saved
    assert torch.isfinite(ours) and torch.equal(ours, lavis), (ours, lavis)


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


def test_inputs_embeds_with_generated_tokens_need_the_cache(model) -> None:
    embeds = torch.zeros(1, 3, model.opt_model.config.word_embed_proj_dim)
    step = model.opt_model.prepare_inputs_for_generation(
        input_ids=torch.zeros(1, 0, dtype=torch.long), inputs_embeds=embeds)
    assert step["inputs_embeds"] is embeds and step["input_ids"] is None
    with pytest.raises(ValueError, match="use_cache=True"):
        model.opt_model.prepare_inputs_for_generation(
            input_ids=torch.zeros(1, 2, dtype=torch.long), inputs_embeds=embeds)


def test_legacy_past_of_tuples() -> None:
    layer = (torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    assert legacy_past(None) is None and legacy_past(()) is None
    assert legacy_past((layer,)) == (layer,)
    with pytest.raises(TypeError, match="list"):
        legacy_past([layer])


@current_only
def test_legacy_past_of_a_transformers_cache() -> None:
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    assert legacy_past(cache) is None  # generate's empty cache at the first step
    key, value = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    cache.update(key, value, 0)
    [(k, v)] = legacy_past(cache)
    assert torch.equal(k, key) and torch.equal(v, value)
