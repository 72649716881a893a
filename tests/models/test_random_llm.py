"""``random:`` LLMs (the benchmarks' full-size shapes without weights): built in their dtype
without touching torch's process-wide default dtype, and initialised as construction would."""
import pytest
import torch


def _small_config():
    from lavis.models.blip2_models.modeling_opt import OPTConfig

    return OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                     num_attention_heads=4, word_embed_proj_dim=32,
                     max_position_embeddings=64, pad_token_id=1)


def test_a_random_llm_is_built_in_its_dtype_without_the_global_default(monkeypatch):
    from lavis_ext.models import llm

    def refuse(dtype):
        raise AssertionError("torch.set_default_dtype changes every thread's default")

    monkeypatch.setattr(torch, "set_default_dtype", refuse)
    monkeypatch.setitem(llm.OPT_SHAPES, "opt-test",
                        dict(hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                             num_attention_heads=4, word_embed_proj_dim=32))
    torch.manual_seed(0)
    _, model = llm.load_llm("random:opt-test", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.vocab_size == llm.OPT_VOCAB
    assert torch.get_default_dtype() == torch.float32


def test_random_opt_is_initialised_like_a_constructed_model():
    from lavis_ext.models.llm import random_opt

    torch.manual_seed(0)
    model = random_opt(_small_config(), torch.bfloat16)
    state = model.state_dict()
    assert all(torch.isfinite(t.float()).all() for t in state.values())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight.float(), torch.ones_like(module.weight.float())), name
            assert not module.bias.float().any(), name
    embed = model.model.decoder.embed_tokens.weight.float()
    assert not embed[1].any()  # the padding row
    std = model.config.init_std
    assert embed[2:].std().item() == pytest.approx(std, rel=0.2)
    assert model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    for buffer_name, buffer in model.named_buffers():
        assert torch.isfinite(buffer.float()).all(), buffer_name
