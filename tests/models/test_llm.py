import pytest
import torch

from lavis_ext.models.llm import resolve_llm_dtype
from lavis_ext.models.tiny_lm import build_tiny_lm


def test_llm_dtype_follows_device(monkeypatch):
    assert resolve_llm_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_llm_dtype("auto", "cuda:0") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_llm_dtype("auto", "cuda") == torch.float16
    assert resolve_llm_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="llm_dtype"):
        resolve_llm_dtype("int8")


def test_half_llm_on_cpu_is_cast_for_forward():
    """LAVIS loads OPT in fp16, which fails on CPU ('mixed dtype (CPU)')."""
    from lavis.models import load_model_and_preprocess
    import lavis_ext  # noqa: F401

    from omegaconf import OmegaConf
    from lavis_ext.models.exp_blip import ExpBlip

    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny")).model
    cfg.llm_dtype = "float16"
    model = ExpBlip.from_config(cfg)
    assert next(model.opt_model.parameters()).dtype == torch.float16
    out = model({"image": torch.randn(2, 3, 112, 112), "text_input": ["a", "b"]})
    assert torch.isfinite(out["loss"])
    assert next(model.opt_model.parameters()).dtype == torch.float32


def test_tiny_lm_is_deterministic(tmp_path):
    settings = dict(pretrain_steps=3, corpus_size=50, vocab_size=300, seed=7)
    a = build_tiny_lm(tmp_path / "a", **settings)
    b = build_tiny_lm(tmp_path / "b", **settings)
    assert (a / "vocab.json").read_text() == (b / "vocab.json").read_text()
    wa = torch.load(a / "pytorch_model.bin", weights_only=True)
    wb = torch.load(b / "pytorch_model.bin", weights_only=True)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = build_tiny_lm(tmp_path / "c", **{**settings, "seed": 8})
    wc = torch.load(c / "pytorch_model.bin", weights_only=True)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
