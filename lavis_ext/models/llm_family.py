"""How a family of frozen causal LMs meets the query tokens, and where its text ends.

Two families, one small class each:

* ``OptFamily``: LAVIS's own ``modeling_opt`` OPT (the plugin's subclass,
  ``models/opt.py``), which ends every caption with "\\n" (its first token is the stop token),
  as BLIP-2 and the paper do. It trains through the same ``inputs_embeds`` forward as every
  other family (the loss is LAVIS's ``Blip2OPT.forward``'s, tested). It generates through
  ``inputs_embeds`` too on current transformers; transformers 4.26 (the paper stack) cannot
  ``generate`` from ``inputs_embeds`` for decoder-only models, so there the queries go in as
  LAVIS's ``query_embeds``.
* ``CausalFamily``: any ``AutoModelForCausalLM`` (Llama, Qwen2, Mistral ...). The queries go
  in through ``inputs_embeds``, in front of the token embeddings from
  ``get_input_embeddings()``. A caption ends with the tokenizer's own EOS token rather than
  "\\n": in sentencepiece tokenizers (Llama, Mistral) "\\n" is two ids ("▁", "<0x0A>"), so its
  first id is not a stop token, and the model's EOS is what generation stops on anyway. BOS
  follows the tokenizer: Llama's adds one, Qwen2's has none (and then none is inserted).

The classes hold no weights; ``ExpBlip`` keeps its LAVIS attribute names (``opt_model``,
``opt_tokenizer``, ``opt_proj``), so checkpoints look the same for every family.
"""
from __future__ import annotations

from typing import Any

import torch

from lavis_ext.errors import InputError


def _generate_takes_inputs_embeds() -> bool:
    """Whether this transformers' ``generate`` starts decoder-only models from
    ``inputs_embeds`` and expands them for beams itself (the current stack; not 4.26)."""
    import transformers
    from packaging.version import Version

    from lavis_ext.models.llm import GENERIC_MIN_TRANSFORMERS

    return Version(transformers.__version__) >= Version(GENERIC_MIN_TRANSFORMERS)


class OptFamily:
    """LAVIS's OPT (BLIP-2, the paper), as the plugin's ``ExpBlipOPTForCausalLM``."""

    name = "opt"
    takes_query_embeds = True  # generate(query_embeds=...): LAVIS's way, on every stack
    # LAVIS's Blip2OPT concatenates the float32 queries with the LLM-dtype token embeddings
    # (torch.cat promotes: the residual stream starts in float32); kept, so the loss is LAVIS's.
    casts_prefix = False

    @property
    def generates_from_embeds(self) -> bool:
        """``inputs_embeds`` where ``generate`` can start from them, else ``query_embeds``."""
        return _generate_takes_inputs_embeds()

    def prepare_tokenizer(self, tokenizer: Any) -> Any:
        return tokenizer

    def end_of_text(self, tokenizer: Any) -> str:
        """Appended to every target text (LAVIS's Blip2OPT appends "\\n")."""
        return "\n"

    def eos_token_id(self, tokenizer: Any) -> int:
        """The id generation stops on: the first token of "\\n", as LAVIS uses."""
        return tokenizer("\n", add_special_tokens=False).input_ids[0]

    def prompt_ids(self, tokenizer: Any, config: Any, prompt: str) -> list[int]:
        """BOS and the prompt; BOS always (an empty prompt must not give [])."""
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        bos = tokenizer.bos_token_id
        if bos is None:
            bos = config.bos_token_id
        return [bos] + ids


class CausalFamily:
    """Any ``AutoModelForCausalLM``, fed through ``inputs_embeds``."""

    name = "causal"
    takes_query_embeds = False
    generates_from_embeds = True
    casts_prefix = True  # the queries in the LLM's dtype, as its own embeddings are

    def prepare_tokenizer(self, tokenizer: Any) -> Any:
        """Batches need a pad token; Llama's tokenizers have none. EOS stands in (padding is
        masked by the attention mask, never by comparing ids, so a pad id equal to EOS does
        not hide the EOS targets)."""
        if tokenizer.eos_token_id is None:
            raise InputError(f"the LLM's tokenizer ({type(tokenizer).__name__}) has no EOS "
                             "token: captions could not end; give model.llm_model a tokenizer "
                             "with eos_token set")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        return tokenizer

    def end_of_text(self, tokenizer: Any) -> str:
        return tokenizer.eos_token

    def eos_token_id(self, tokenizer: Any) -> int:
        return tokenizer.eos_token_id

    def prompt_ids(self, tokenizer: Any, config: Any, prompt: str) -> list[int]:
        """The prompt exactly as training tokenizes the start of each text: with BOS when the
        tokenizer adds one (Llama), without when it has none (Qwen2)."""
        return tokenizer(prompt).input_ids


OPT = OptFamily()
CAUSAL = CausalFamily()


def family_of(model: torch.nn.Module) -> OptFamily | CausalFamily:
    """``OPT`` for LAVIS's OPT class and its subclasses (``query_embeds``), ``CAUSAL``
    otherwise."""
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

    return OPT if isinstance(model, OPTForCausalLM) else CAUSAL
