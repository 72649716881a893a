"""Paper configs never start from random weights; missing weights fail fast and name
themselves; inference refuses checkpoints without trained parts; the LLM dtype is honoured."""
import logging
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401
from lavis.common.registry import registry
from lavis.models import load_model_and_preprocess

from lavis_ext.models import weights
from lavis_ext.models.checkpoint import IncompleteCheckpointError
from lavis_ext.models.exp_blip import ExpBlip
from lavis_ext.models.llm import cover_vocabulary, resolve_llm_dtype
from lavis_ext.models.weights import PARTS, WeightsUnavailableError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LAVIS_EXT_OFFLINE", "1")
    for part in PARTS.values():
        monkeypatch.delenv(part.env, raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_paper_stage1_offline_fails_in_seconds_naming_the_weights(empty_caches):
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model_and_preprocess("exp_blip_qformer", "vitg")
    assert time.monotonic() - started < 10
    message = str(info.value)
    for expected in ("eva_vit_g.pth", "blip2_pretrained.pth", "LAVIS_EXT_EVA_VIT_G",
                     "LAVIS_EXT_BLIP2_PRETRAINED", "model.vit_weights", "model.pretrained"):
        assert expected in message, expected


def _model_cfg(path):
    cfg = OmegaConf.load(path)
    cls = registry.get_model_class(cfg.model.arch)
    base = OmegaConf.load(cls.default_config_path(cfg.model.model_type)).model
    return cls, OmegaConf.merge(base, cfg.model)


PAPER_CONFIGS = sorted(p for p in (REPO / "projects").glob("*/stage[12]*.yaml")
                       if "tiny" not in p.name)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_paper_configs_need_weights_not_random(path, empty_caches):
    cls, cfg = _model_cfg(path)
    for key in ("vit_weights", "bert_path", "opt_model", "llm_model", "pretrained"):
        assert "random" not in str(cfg.get(key)), key
    if cfg.load_pretrained and cfg.arch != "exp_blip_qformer":
        cfg.pretrained = str(path)  # any existing file: the stage-1 run does not exist here
    with pytest.raises(WeightsUnavailableError) as info:
        cls.resolve_weights(cfg)
    message = str(info.value)
    assert ("eva_vit_g" in message) == (cfg.vit_model == "eva_clip_g")
    assert ("vit_b_mae" in message) == (cfg.vit_model == "vit_b_mae")
    if cfg.arch == "exp_blip_qformer":
        start = "blip2_pretrained" if cfg.model_type == "vitg" else "bert-base-uncased"
        assert start in message
    else:
        from lavis_ext.models.weights import HUB_PARTS

        llm = cls._llm_name(cfg)  # llm_model over the model type's opt_model
        if llm in HUB_PARTS:  # OPT: a manifest part, resolved before building
            assert llm.split("/")[-1] in message
        else:  # another hub id: transformers' cache or download when the model builds
            assert "opt-" not in message, message


def test_stage1_starts_from_blip2_as_the_official_code():
    for path in (REPO / "projects").glob("*/stage1.yaml"):
        cfg = OmegaConf.load(path).model
        assert cfg.load_pretrained is True and cfg.pretrained == "blip2_pretrained", path
    zoo = OmegaConf.load(registry.get_model_class("exp_blip_qformer").default_config_path("vitg"))
    assert zoo.model.pretrained == "blip2_pretrained"


def _trimmed(model, drop=()):
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith(("opt_model.",) + tuple(drop))}


@pytest.mark.parametrize("drop", ["query_tokens", "opt_proj.", "Qformer.bert.encoder.layer.1."])
def test_inference_refuses_a_checkpoint_without_trained_parts(tiny_stage2, tmp_path, drop):
    model, _, _ = tiny_stage2
    path = tmp_path / "partial.pth"
    torch.save({"model": _trimmed(model, (drop,))}, path)
    with pytest.raises(IncompleteCheckpointError, match=drop.split(".")[0]):
        ExpBlip.from_config(OmegaConf.merge(
            OmegaConf.load(ExpBlip.default_config_path("tiny")).model,
            {"load_finetuned": True, "finetuned": str(path)}))


def test_load_captioner_is_strict_and_warns_on_unexpected_keys(tiny_stage2, tmp_path, caplog):
    from lavis_ext.describe.captioner import load_captioner

    model, _, _ = tiny_stage2
    config = {"model": OmegaConf.to_container(
        OmegaConf.load(ExpBlip.default_config_path("tiny")).model)}
    good = tmp_path / "checkpoint_best.pth"
    torch.save({"model": {**_trimmed(model), "extra_head.weight": torch.ones(2)},
                "config": config, "epoch": 0}, good)
    with caplog.at_level(logging.WARNING):
        captioner = load_captioner(str(good))
    assert "extra_head" in caplog.text
    assert torch.equal(captioner.model.query_tokens, model.query_tokens)
    bad = tmp_path / "checkpoint_0.pth"
    torch.save({"model": _trimmed(model, ("query_tokens",)), "config": config}, bad)
    with pytest.raises(IncompleteCheckpointError, match="query_tokens"):
        load_captioner(str(bad))


def test_llm_dtype_explicit_or_auto_by_size():
    assert resolve_llm_dtype("bfloat16", device="cpu") == torch.bfloat16
    assert resolve_llm_dtype("float16", device="cpu") == torch.float16
    assert resolve_llm_dtype("auto", device="cpu", parameters=2_700_000_000) == torch.bfloat16
    assert resolve_llm_dtype("auto", device="cpu", parameters=2_000_000) == torch.float32
    with pytest.raises(ValueError, match="model.llm_dtype"):
        resolve_llm_dtype("int8", "cpu")


def test_bf16_llm_on_cpu_trains_and_generates(one_torch_thread):
    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny")).model
    cfg.llm_dtype = "bfloat16"
    model = ExpBlip.from_config(cfg)
    assert all(p.dtype == torch.bfloat16 for p in model.opt_model.parameters())
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    model.train()
    loss = model({"image": images, "text_input": ["It is a people who raises cheek."] * 2})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.opt_proj.weight.grad is not None
    model.eval()
    captions = model.generate({"image": images}, num_beams=2, max_length=8)
    assert len(captions) == 2
    assert next(model.opt_model.parameters()).dtype == torch.bfloat16, "never cast to fp32"


def test_random_llm_tokenizer_covers_the_model_vocabulary():
    from lavis_ext.models.llm import _random_llm_tokenizer

    config = type("Config", (), {"vocab_size": 2000})()
    tokenizer = _random_llm_tokenizer(config, None)
    assert len(tokenizer) == 2000
    texts = tokenizer.batch_decode([[5, 700, 1999], [1500]], skip_special_tokens=True)
    assert "<unused_1999>" in texts[0] and texts[1] == "<unused_1500>"
    assert tokenizer("raises cheek").input_ids[-1] < 1000, "tokenizing is unchanged"
    with pytest.raises(TypeError, match="GPT2Tokenizer"):
        cover_vocabulary(object(), 10)


def test_load_captioner_freezes_a_trained_encoder_in_half_precision(tiny_stage2, tmp_path):
    """A training checkpoint (encoder trained, fp32) is captioned with the encoder frozen in
    half precision: the LLM's bf16 on CPU, so ViT-G + OPT-6.7B fit a 24 GB machine."""
    from lavis_ext.describe.captioner import load_captioner

    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine a frozen fp16 encoder is float16, as in LAVIS")
    model, _, _ = tiny_stage2
    config = OmegaConf.to_container(OmegaConf.load(ExpBlip.default_config_path("tiny")).model)
    config.update(freeze_vit=False, vit_precision="fp32", llm_dtype="bfloat16")
    path = tmp_path / "checkpoint_best.pth"
    torch.save({"model": _trimmed(model), "config": {"model": config}, "epoch": 0}, path)
    captioner = load_captioner(str(path))
    net = captioner.model
    assert {p.dtype for p in net.visual_encoder.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in net.visual_encoder.parameters())
    assert {p.dtype for p in net.opt_model.parameters()} == {torch.bfloat16}
    from PIL import Image

    texts = captioner.caption([Image.new("RGB", (112, 112), (120, 90, 60))], num_beams=2,
                              max_length=5)
    assert len(texts) == 1 and isinstance(texts[0], str)
