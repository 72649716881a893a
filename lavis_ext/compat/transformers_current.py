"""LAVIS 1.0.2 on current transformers (the ``current`` stack, 4.46 and later).

LAVIS 1.0.2 was written against transformers 4.25/4.26. Three things of its code no longer
hold on current releases (measured on 4.57.6; the records in ``lavis_ext.compat`` say which
versions each fix applies to):

* **Moved helpers.** ``lavis/models/med.py``, ``blip_models/nlvr_encoder.py`` and
  ``blip2_models/Qformer.py`` import ``apply_chunking_to_forward``,
  ``find_pruneable_heads_and_indices`` and ``prune_linear_layer`` from
  ``transformers.modeling_utils``. They live in ``transformers.pytorch_utils`` (since 4.20),
  and ``modeling_utils`` stopped re-exporting them, so ``import lavis`` fails with an
  ImportError. :func:`from_pytorch_utils` provides the same objects under the old module
  before LAVIS is imported (a :class:`~lavis_ext.compat._patch.Provide` record).
* **No generate.** ``PreTrainedModel`` no longer inherits ``GenerationMixin``; a model class
  must list it itself. LAVIS's own ``OPTForCausalLM`` (``blip2_models/modeling_opt.py``, the
  OPT that accepts ``query_embeds``) does not, so ``opt_model.generate`` raises
  AttributeError. :func:`patch_opt_bases` appends ``GenerationMixin`` to the class's bases,
  in place, so that every reference to the class (``blip2_opt`` imported it by name) and
  every instance has it.
* **Generation inputs.** LAVIS's ``prepare_inputs_for_generation`` takes the cache as
  ``past``, but ``generate`` passes it as ``past_key_values`` (an empty ``DynamicCache`` at
  the first step), so the cache was never used: every step ran the whole sequence again.
  And ``generate`` now expands every tensor among the model kwargs for beams and returned
  sequences, ``query_embeds`` included; the callers (LAVIS's ``Blip2OPT.generate``,
  ``ExpBlip.generate``) expand it themselves as 4.26 required, so with 2 beams it arrives with
  4 rows per image against 2 text rows, and ``torch.cat([query_embeds, inputs_embeds])``
  fails. :func:`patch_prepare_inputs_for_generation` reads the cache from either name and
  undoes the second expansion (after checking that the rows are copies).
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def from_pytorch_utils(name: str) -> Any:
    """Provide factory: ``transformers.pytorch_utils.<name>``, the helper's current home."""
    from transformers import pytorch_utils

    return getattr(pytorch_utils, name)


def patch_opt_bases(bases: tuple[type, ...]) -> tuple[type, ...]:
    """Patch factory for ``OPTForCausalLM.__bases__``: the same bases plus ``GenerationMixin``."""
    from transformers.generation import GenerationMixin

    if any(issubclass(base, GenerationMixin) for base in bases):
        return bases
    return (*bases, GenerationMixin)


def _legacy_past(past: Any) -> Any:
    """The cache as LAVIS's OPT layers read it: None, or a tuple of (key, value) per layer."""
    if past is None or isinstance(past, tuple):
        return past or None
    from transformers.cache_utils import Cache

    if isinstance(past, Cache):
        if past.get_seq_length() == 0:
            return None
        return past.to_legacy_cache()
    raise TypeError(f"LAVIS's OPT cannot use a cache of type {type(past).__name__}")


def undo_second_expansion(query_embeds: torch.Tensor, rows: int) -> torch.Tensor:
    """``query_embeds`` with one row per input row, when ``generate`` expanded it once more.

    Both expansions are ``repeat_interleave``: the rows come in runs of ``k`` identical copies,
    so every ``k``-th row is the tensor the caller meant. Anything else is an error, not a guess.
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


def patch_prepare_inputs_for_generation(stock: Callable[..., Any]) -> Callable[..., Any]:
    """Patch factory for LAVIS's ``OPTForCausalLM.prepare_inputs_for_generation``."""

    def prepare_inputs_for_generation(self: Any, input_ids: torch.Tensor | None = None,
                                      query_embeds: torch.Tensor | None = None, past: Any = None,
                                      attention_mask: torch.Tensor | None = None,
                                      use_cache: bool | None = None, past_key_values: Any = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """LAVIS's step inputs, reading the cache from ``past_key_values`` as generate passes it."""
        past = _legacy_past(past if past is not None else past_key_values)
        if query_embeds is not None and past is None and input_ids is not None:
            query_embeds = undo_second_expansion(query_embeds, input_ids.shape[0])
        return stock(self, input_ids=input_ids, query_embeds=query_embeds, past=past,
                     attention_mask=attention_mask, use_cache=use_cache, **kwargs)

    return prepare_inputs_for_generation
