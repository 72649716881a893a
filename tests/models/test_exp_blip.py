import os

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers the models)
from lavis.common.registry import registry
from lavis.models import load_model_and_preprocess

from lavis_ext.models.exp_blip import ExpBlip, ExpBlipQformer
from lavis_ext.models.paths import MissingModelFileError
from support.generation import assert_no_repeated_bigrams


def _tiny_cfg(arch: str, **overrides):
    cls = registry.get_model_class(arch)
    cfg = OmegaConf.load(cls.default_config_path("tiny")).model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cls, cfg


def test_load_model_and_preprocess_right_after_import(tiny_stage2, images):
    model, vis, txt = tiny_stage2
    assert isinstance(model, ExpBlip)
    assert set(vis) == {"train", "eval"} and set(txt) == {"train", "eval"}
    captions = model.generate({"image": images}, num_beams=2, max_length=20)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)


def test_aliases_and_model_types_registered():
    for name in ("exp_blip_qformer", "exp_blip", "au_blip", "emot_blip"):
        cls = registry.get_model_class(name)
        assert cls is not None, name
        assert os.path.isfile(cls.default_config_path("base"))
        assert os.path.isfile(cls.default_config_path("tiny"))
    for model_type in ("vitg_opt2.7b", "vitg_opt6.7b", "vitb_opt2.7b", "vitb_opt6.7b"):
        cfg = OmegaConf.load(ExpBlip.default_config_path(model_type))
        # Inference configs: the encoder frozen in half precision (training configs set
        # freeze_vit: False and fp32; test_projects checks those).
        assert cfg.model.freeze_vit is True and cfg.model.vit_precision == "fp16"
        assert cfg.model.prompt == ""
        assert cfg.model.generation.num_beams == 5 and cfg.model.generation.max_len == 200


def test_stage1_trains_one_step_without_process_group(images):
    assert not torch.distributed.is_initialized()
    cls, cfg = _tiny_cfg("exp_blip_qformer")
    model = cls.from_config(cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    samples = {"image": images, "text_input": ["It is a people who raises cheek.",
                                               "The face shows sadness.",
                                               "It is a people who drops jaw."]}
    out = model(samples)
    for name in ("loss_itc", "loss_itm", "loss_lm"):
        assert torch.isfinite(getattr(out, name)), name
    before = model.query_tokens.detach().clone()
    out.loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.query_tokens.detach())


def test_stage2_trains_one_step(tiny_stage2, images):
    _, cfg = _tiny_cfg("exp_blip")
    model = ExpBlip.from_config(cfg)
    model.train()
    out = model({"image": images, "text_input": ["It is a people who raises cheek."] * 3})
    out["loss"].backward()
    assert model.opt_proj.weight.grad is not None
    assert all(p.grad is None for p in model.opt_model.parameters()), "the LLM stays frozen"


def test_stage2_starts_from_stage1_qformer(tmp_path):
    cls1, cfg1 = _tiny_cfg("exp_blip_qformer")
    stage1 = cls1.from_config(cfg1)
    with torch.no_grad():
        stage1.query_tokens.add_(1.0)
    path = tmp_path / "stage1.pth"
    torch.save({"model": stage1.state_dict(), "epoch": 0}, path)
    _, cfg2 = _tiny_cfg("exp_blip", load_pretrained=True, pretrained=str(path))
    stage2 = ExpBlip.from_config(cfg2)
    s1, s2 = stage1.state_dict(), stage2.state_dict()
    shared = [k for k in s2 if k.startswith(("Qformer.", "query_tokens", "visual_encoder.",
                                             "ln_vision."))]
    assert len(shared) > 20
    for key in shared:
        assert torch.equal(s1[key], s2[key]), key
    assert stage2.load_report["missing"] == [k for k in stage2.load_report["missing"]
                                             if k.startswith(("opt_proj", "opt_model"))]


def test_checkpoint_round_trip(tiny_stage2, images, tmp_path):
    model, _, _ = tiny_stage2
    trainable = {k: v for k, v in model.state_dict().items()
                 if not k.startswith("opt_model.")}
    path = tmp_path / "checkpoint_best.pth"
    torch.save({"model": trainable, "epoch": 3}, path)
    _, cfg = _tiny_cfg("exp_blip", load_finetuned=True, finetuned=str(path))
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = ExpBlip.from_config(cfg).eval()
    for key, value in trainable.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    kwargs = dict(num_beams=2, max_length=15)
    assert loaded.generate({"image": images}, **kwargs) == model.generate({"image": images},
                                                                           **kwargs)


# Key names as LAVIS's blip2_opt (and so the released *_trimmed.pth checkpoints) store them.
OFFICIAL_KEYS = [
    "query_tokens", "opt_proj.weight", "opt_proj.bias", "ln_vision.weight", "ln_vision.bias",
    "Qformer.bert.embeddings.LayerNorm.weight",
    "Qformer.bert.encoder.layer.0.attention.self.query.weight",
    "Qformer.bert.encoder.layer.0.crossattention.self.key.weight",
    "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight",
    "Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias",
]


def test_official_key_names_load_without_missing_qformer_keys(tiny_stage2, tmp_path):
    model, _, _ = tiny_stage2
    own = model.state_dict()
    assert all(k in own for k in OFFICIAL_KEYS)
    # A trimmed checkpoint: trainable parameters only, as the released files hold.
    trimmed = {k: torch.randn_like(v) if v.is_floating_point() else v
               for k, v in own.items() if not k.startswith("opt_model.")}
    path = tmp_path / "exp_blip_trimmed.pth"
    torch.save({"model": trimmed}, path)
    _, cfg = _tiny_cfg("exp_blip", load_finetuned=True, finetuned=str(path))
    loaded = ExpBlip.from_config(cfg)
    missing = loaded.load_report["missing"]
    assert not [k for k in missing if k.startswith(("Qformer.", "query_tokens", "opt_proj"))]
    assert all(k.startswith("opt_model.") for k in missing)
    assert loaded.load_report["unexpected"] == []
    assert torch.equal(loaded.query_tokens, trimmed["query_tokens"])


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": object()}, path)  # needs unpickling of a class
    from lavis_ext.models.checkpoint import read_checkpoint

    with pytest.raises(ValueError, match="weights-only"):
        read_checkpoint(path)


def test_missing_weight_files_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LAVIS_EXT_EVA_VIT_G", raising=False)
    _, cfg = _tiny_cfg("exp_blip_qformer", vit_model="eva_clip_g",
                       vit_weights=str(tmp_path / "eva_vit_g.pth"))
    with pytest.raises(MissingModelFileError, match="model.vit_weights.*LAVIS_EXT_EVA_VIT_G"):
        ExpBlipQformer.from_config(cfg)
    monkeypatch.delenv("LAVIS_EXT_EXP_BLIP_CKPT", raising=False)
    with pytest.raises(MissingModelFileError, match="LAVIS_EXT_EXP_BLIP_CKPT"):
        load_model_and_preprocess("exp_blip", "base", is_eval=True)  # the released model
    _, cfg = _tiny_cfg("exp_blip", load_finetuned=True, finetuned=str(tmp_path / "no.pth"))
    with pytest.raises(FileNotFoundError, match="model.finetuned.*no.pth"):
        ExpBlip.from_config(cfg)
    _, cfg = _tiny_cfg("exp_blip", opt_model=str(tmp_path / "opt-2.7b"))
    with pytest.raises(MissingModelFileError, match="model.opt_model"):
        ExpBlip.from_config(cfg)
    _, cfg = _tiny_cfg("exp_blip", bert_path=str(tmp_path / "bert"), qformer=None)
    with pytest.raises(MissingModelFileError, match="model.bert_path.*LAVIS_EXT_BERT_PATH"):
        ExpBlip.from_config(cfg)
    _, cfg = _tiny_cfg("exp_blip", bert_path=None)  # a resized Q-Former needs `random`
    with pytest.raises(ValueError, match="model.bert_path: random"):
        ExpBlip.from_config(cfg)


def test_generation_controls(tiny_stage2, images):
    model, _, _ = tiny_stage2
    several = model.generate({"image": images}, use_nucleus_sampling=True, num_captions=2,
                             max_length=20)
    assert len(several) == 6
    texts = model.generate({"image": images}, num_beams=2, max_length=60,
                           no_repeat_ngram_size=2)
    assert_no_repeated_bigrams(model.opt_tokenizer, texts)


def test_empty_prompt_still_starts_with_bos(tiny_stage2):
    model, _, _ = tiny_stage2
    ids = model._prompt_ids("", 2, torch.device("cpu"))
    assert ids.shape == (2, 1) and int(ids[0, 0]) == model.opt_tokenizer.bos_token_id


def test_probe_features(tiny_stage2, images):
    model, _, _ = tiny_stage2
    model.train()
    vision = model.probe_features(images, "vision")
    query = model.probe_features(images, "qformer")
    assert vision.shape == (3, 128) and query.shape == (3, 128)
    assert not vision.requires_grad and model.training, "eval inside, mode restored"
    with pytest.raises(ValueError, match="probe source"):
        model.probe_features(images, "pixels")
    model.eval()


