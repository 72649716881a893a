"""How a family of frozen causal LMs meets the query tokens, and where its text ends.

Two families, one small class each:

* ``OptFamily``: LAVIS's own ``modeling_opt`` OPT, which takes the projected queries as
  ``query_embeds`` and ends every caption with "\\n" (its first token is the stop token). This
  is BLIP-2's and the paper's path, kept exactly as LAVIS runs it.
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


class OptFamily:
    """LAVIS's OPT with ``query_embeds`` (BLIP-2, the paper)."""

    name = "opt"
    takes_query_embeds = True

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
    """``OPT`` for LAVIS's OPT class (it accepts ``query_embeds``), ``CAUSAL`` otherwise."""
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM

    return OPT if isinstance(model, OPTForCausalLM) else CAUSAL
