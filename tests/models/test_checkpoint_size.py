"""A stage-2 checkpoint holds what training changed: no copy of the frozen LLM's output layer.

OPT ties ``lm_head.weight`` to its input embeddings. ``named_parameters()`` lists a tied tensor
once, under ``embed_tokens``, so a filter built from it kept ``lm_head.weight`` in every
checkpoint (for OPT-6.7B, 50272 x 4096 values: 0.4 GB in bf16, 0.8 GB in float32)."""
import torch

from lavis_ext.runners.checkpoints import load_model_state, trainable_state_dict


def test_the_tied_lm_head_of_the_frozen_llm_is_not_saved(tiny_stage2):
    model, _, _ = tiny_stage2
    llm = model.opt_model
    assert llm.lm_head.weight is llm.get_input_embeddings().weight, "the tiny LM ties them"
    assert not llm.lm_head.weight.requires_grad
    saved = trainable_state_dict(model)
    assert not [k for k in saved if k.startswith("opt_model.")], sorted(saved)[:5]
    assert any(k.startswith("Qformer.") for k in saved) and "query_tokens" in saved
    # and it loads back into the model as the runner resumes it
    before = llm.lm_head.weight.clone()
    load_model_state(model, {k: v.clone() for k, v in saved.items()}, source="test")
    assert torch.equal(llm.lm_head.weight, before)
