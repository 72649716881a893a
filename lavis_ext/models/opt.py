"""The plugin's own OPT: LAVIS's ``modeling_opt.OPTForCausalLM`` with a KV cache on every stack.

LAVIS 1.0.2's OPT (the one that takes ``query_embeds``) reads the cache in
``prepare_inputs_for_generation`` as ``past``, but ``generate`` passes it as
``past_key_values`` (transformers 4.26.1 as much as current releases), so the cache is never
used: every decoding step runs the whole sequence, queries included, again. On current
transformers (4.46 and later) the class also lacks ``generate`` (``PreTrainedModel`` no longer
inherits ``GenerationMixin``), ``generate`` hands over the cache as a ``Cache`` object (an
empty ``DynamicCache`` at the first step) where LAVIS's layers read tuples, and it expands
every tensor among the model kwargs for beams, ``query_embeds`` included, which the callers
already expanded as 4.26 required.

:class:`ExpBlipOPTForCausalLM` fixes all of that in a subclass that only the plugin's models
build (``lavis_ext.models.llm.load_llm``); LAVIS's own class and its ``blip2_opt`` stay as
shipped. Module names and weights are LAVIS's, so checkpoint keys (``opt_model.*``) are
unchanged. It also takes ``inputs_embeds`` at the first step, so on current transformers OPT
generates through ``inputs_embeds`` like every other causal LM (4.26's ``generate`` cannot do
that for decoder-only models; there ``query_embeds`` stays).
"""
from __future__ import annotations

from typing import Any

import torch
from lavis.models.blip2_models.modeling_opt import OPTForCausalLM
from transformers import PreTrainedModel


def _generation_bases() -> tuple[type, ...]:
    """``(GenerationMixin,)`` where ``PreTrainedModel`` no longer inherits it (current
    transformers), else nothing: 4.26's ``PreTrainedModel`` already is one."""
    from transformers.generation import GenerationMixin

    return () if issubclass(PreTrainedModel, GenerationMixin) else (GenerationMixin,)


def legacy_past(past: Any) -> tuple[tuple[torch.Tensor, ...], ...] | None:
    """The cache as LAVIS's OPT layers read it: None, or a tuple of (key, value) per layer.

    An empty cache (current ``generate`` starts with an empty ``DynamicCache``) is None, so
    the first step still runs the whole prefix with the query embeddings.
    """
    if past is None or isinstance(past, tuple):
        return past or None
    try:
        from transformers.cache_utils import Cache  # current transformers; 4.26 has tuples only
    except ImportError:
        Cache = ()  # noqa: N806 - isinstance(x, ()) is False
    if isinstance(past, Cache):
        if past.get_seq_length() == 0:
            return None
        return past.to_legacy_cache()
    raise TypeError(f"LAVIS's OPT cannot use a cache of type {type(past).__name__}")


def undo_second_expansion(query_embeds: torch.Tensor, rows: int) -> torch.Tensor:
    """``query_embeds`` with one row per input row, when ``generate`` expanded it once more.

    Current ``generate`` repeats every model-kwarg tensor for beams and returned sequences; the
    callers (``ExpBlip.generate`` on 4.26, LAVIS's ``Blip2OPT.generate``) already did. Both
    expansions are ``repeat_interleave``: the rows come in runs of ``k`` identical copies, so
    every ``k``-th row is the tensor the caller meant. Anything else is an error, not a guess.
    """
    have = query_embeds.shape[0]
    if have == rows:
        return query_embeds
    if rows == 0 or have % rows:
        raise ValueError(f"query_embeds has {have} rows for {rows} input rows; expected {rows} "
                         "(or a whole multiple that generate expanded again)")
    k = have // rows
    runs = query_embeds.reshape(rows, k, *query_embeds.shape[1:])
    if not bool((runs == runs[:, :1]).all()):
        raise ValueError(f"query_embeds has {have} rows for {rows} input rows, but its runs of "
                         f"{k} rows are not copies: cannot tell which row belongs to which input")
    return runs[:, 0]


class ExpBlipOPTForCausalLM(OPTForCausalLM, *_generation_bases()):
    """LAVIS's OPT (``query_embeds``) whose ``generate`` uses the KV cache on every stack."""

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor | None = None,
                                      query_embeds: torch.Tensor | None = None,
                                      past: Any = None,
                                      attention_mask: torch.Tensor | None = None,
                                      use_cache: bool | None = None,
                                      past_key_values: Any = None,
                                      inputs_embeds: torch.Tensor | None = None,
                                      **_: Any) -> dict[str, Any]:
        """The step's inputs: the whole prefix (with ``query_embeds`` or ``inputs_embeds``)
        while the cache is empty, then only the newest token against the cache.

        The cache comes as ``past_key_values`` (how ``generate`` passes it) or ``past``
        (LAVIS's name). ``inputs_embeds`` must be a parameter here: current ``generate``
        refuses it for decoder-only models whose ``prepare_inputs_for_generation`` lacks it.
        """
        past = legacy_past(past if past is not None else past_key_values)
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.new_ones(input_ids.shape)
        if past is not None:
            return {"input_ids": input_ids[:, -1:], "query_embeds": None,
                    "attention_mask": attention_mask, "past_key_values": past,
                    "use_cache": use_cache}
        if inputs_embeds is not None:
            # generate(inputs_embeds=...) always keeps a cache (transformers turns use_cache on
            # for it), so input_ids, the tokens after the embeddings, are empty here
            if input_ids is not None and input_ids.shape[1]:
                raise ValueError("inputs_embeds without a cache but with generated tokens: "
                                 "generate from inputs_embeds needs use_cache=True")
            return {"input_ids": None, "inputs_embeds": inputs_embeds, "query_embeds": None,
                    "attention_mask": attention_mask, "past_key_values": None,
                    "use_cache": use_cache}
        if query_embeds is not None and input_ids is not None:
            query_embeds = undo_second_expansion(query_embeds, input_ids.shape[0])
        return {"input_ids": input_ids, "query_embeds": query_embeds,
                "attention_mask": attention_mask, "past_key_values": None,
                "use_cache": use_cache}
