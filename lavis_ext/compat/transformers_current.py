"""LAVIS 1.0.2 on current transformers (the ``current`` stack, 4.46 and later): moved helpers.

``lavis/models/med.py``, ``blip_models/nlvr_encoder.py`` and ``blip2_models/Qformer.py`` import
``apply_chunking_to_forward``, ``find_pruneable_heads_and_indices`` and ``prune_linear_layer``
from ``transformers.modeling_utils``. They live in ``transformers.pytorch_utils`` (since 4.20),
and ``modeling_utils`` stopped re-exporting them, so ``import lavis`` fails with an
ImportError. :func:`from_pytorch_utils` provides the same objects under the old module before
LAVIS is imported (a :class:`~lavis_ext.compat._patch.Provide` record).

What else of LAVIS's code no longer holds on current releases concerns its OPT class
(``generate`` missing, the cache passed as ``past_key_values``, ``query_embeds`` expanded
twice for beams); the plugin's models use their own subclass for it
(:mod:`lavis_ext.models.opt`) instead of changing LAVIS's.
"""
from __future__ import annotations

from typing import Any


def from_pytorch_utils(name: str) -> Any:
    """Provide factory: ``transformers.pytorch_utils.<name>``, the helper's current home."""
    from transformers import pytorch_utils

    return getattr(pytorch_utils, name)
