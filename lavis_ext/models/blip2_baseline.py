"""BLIP-2 as released, for the paper's Table 2 baselines: LAVIS's ``Blip2OPT`` decoding
through the plugin's OPT class.

LAVIS's ``blip2_opt`` stays as shipped, so on the paper stack it decodes without a KV cache
(it reads the cache as ``past``; ``generate`` passes ``past_key_values``), and on current
transformers its OPT has no ``generate`` at all. ``expblip_blip2_opt`` is the same model, the
same model types, configs and released weights, with its ``opt_model`` made an
:class:`~lavis_ext.models.opt.ExpBlipOPTForCausalLM` once LAVIS has built it. That class adds
only methods to LAVIS's (no parameters, no buffers), so the instance keeps its weights and
checkpoint keys; nothing is loaded twice.
"""
from __future__ import annotations

from typing import Any

from lavis.common.registry import registry
from lavis.models.blip2_models.blip2_opt import Blip2OPT

from lavis_ext.models.opt import ExpBlipOPTForCausalLM

ARCH = "expblip_blip2_opt"


def adopt_plugin_opt(llm: Any) -> ExpBlipOPTForCausalLM:
    """Make a LAVIS ``OPTForCausalLM`` instance the plugin's class, in place."""
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

    if not isinstance(llm, OPTForCausalLM):
        raise TypeError(f"expected LAVIS's OPTForCausalLM, got {type(llm).__name__}")
    llm.__class__ = ExpBlipOPTForCausalLM
    if getattr(llm, "generation_config", None) is None:
        # current transformers gives no generation config to a class that could not generate
        from transformers import GenerationConfig

        llm.generation_config = GenerationConfig.from_model_config(llm.config)
    return llm


@registry.register_model(ARCH)
class ExpBlipBlip2OPT(Blip2OPT):
    """LAVIS's ``blip2_opt`` (every model type of it, inherited), with the KV cache on every
    stack."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adopt_plugin_opt(self.opt_model)
