"""One dtype table for model.llm_dtype, model.vit_precision and run.amp_dtype; the automatic
choices follow the target device, on every host (a CUDA host is faked where it matters)."""
import pytest
import torch

from lavis_ext.runners.amp import parse_amp_dtype
from lavis_ext.errors import InputError
from lavis_ext.models import precision
from lavis_ext.models.llm import resolve_llm_dtype


@pytest.mark.parametrize("names, dtype", [
    (("float32", "fp32", "float", "FP32", "torch.float32"), torch.float32),
    (("float16", "fp16", "half"), torch.float16),
    (("bfloat16", "bf16"), torch.bfloat16),
])
def test_every_field_reads_the_same_aliases(names, dtype):
    for name in names:
        assert resolve_llm_dtype(name, "cpu") == dtype
        if dtype != torch.float32:
            assert parse_amp_dtype(name) == dtype
        if dtype != torch.bfloat16:
            assert precision.vit_dtype(name, "cuda") == dtype


@pytest.mark.parametrize("call, field, listed", [
    (lambda: resolve_llm_dtype("int8", "cpu"), "model.llm_dtype",
     "auto, float32 (fp32, float), float16 (fp16, half), bfloat16 (bf16)"),
    (lambda: precision.vit_dtype("bf16", "cpu"), "model.vit_precision",
     "float32 (fp32, float), float16 (fp16, half)"),
    (lambda: parse_amp_dtype("auto"), "run.amp_dtype", "float16 (fp16, half), bfloat16 (bf16)"),
    (lambda: parse_amp_dtype("float32"), "run.amp_dtype", "float16 (fp16, half), bfloat16"),
])
def test_errors_name_the_field_and_list_what_it_accepts(call, field, listed):
    with pytest.raises(InputError) as caught:
        call()
    assert str(caught.value).startswith(f"{field}=") and listed in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError still do


def test_a_cpu_model_on_a_cuda_host_gets_the_cpu_policy(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.llm_dtype("auto", "cpu", parameters=2_000_000) == torch.float32
    assert precision.llm_dtype("auto", "cpu", parameters=6_700_000_000) == torch.bfloat16
    assert precision.llm_dtype("auto", "cuda:1") == torch.bfloat16
    # vit_precision fp16: LAVIS's fp16 on CUDA; beside a bf16 LLM on CPU, bf16; else float32
    assert precision.vit_dtype("fp16", "cuda", torch.bfloat16) == torch.float16
    assert precision.vit_dtype("fp16", "cpu", torch.bfloat16) == torch.bfloat16
    assert precision.vit_dtype("fp16", "cpu", torch.float32) == torch.float32
    assert precision.vit_dtype("fp16", "cpu") == torch.float32  # stage 1: no LLM
    assert precision.vit_dtype("fp32", "cuda") == torch.float32


def test_the_target_device_reaches_the_vision_encoder(monkeypatch):
    from lavis_ext.models.vision import build_vision_encoder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU host, CUDA target
    encoder, _ = build_vision_encoder("tiny", 112, precision="fp16", device="cuda")
    assert {p.dtype for p in encoder.parameters()} == {torch.float16}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA host, CPU target
    encoder, _ = build_vision_encoder("tiny", 112, precision="fp16", device="cpu")
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    encoder, _ = build_vision_encoder("tiny", 112, precision="half", device="cpu",
                                      llm_dtype=torch.bfloat16)
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    with pytest.raises(InputError, match="model.vit_precision"):
        build_vision_encoder("tiny", 112, precision="int8")


def test_training_passes_run_device_to_the_model_and_saves_the_config_as_written():
    from omegaconf import OmegaConf

    from lavis_ext.entry import build_model

    class Cfg:
        model_cfg = OmegaConf.create({"arch": "exp_blip", "model_type": "tiny"})
        run_cfg = OmegaConf.create({"device": "cuda"})

    class Task:
        def build_model(self, cfg):
            return cfg.model_cfg.get("device")

    cfg = Cfg()
    assert build_model(Task(), cfg) == "cuda"
    assert "device" not in cfg.model_cfg
    cfg.model_cfg.device = "cpu"  # a model config that sets its device keeps it
    assert build_model(Task(), cfg) == "cpu"
