"""run.lr_layer_decay: per-depth lr scales for the image encoder, kept by the plugin's schedulers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers the plugin)
from lavis.common.optims import LinearWarmupCosineLRScheduler
from lavis.common.registry import registry
from lavis_ext.runners import ExpBlipRunner
from lavis_ext.runners.layer_decay import encoder_layer, layer_decay_groups
from lavis_ext.runners.schedulers import (COSINE, STEP, ScaledWarmupCosineLRScheduler,
                                          ScaledWarmupStepLRScheduler)
from lavis_ext.models.vision import TokenViT


class _Captioner(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual_encoder = TokenViT(img_size=32, patch_size=16, embed_dim=32, depth=2,
                                       num_heads=2)
        self.ln_vision = torch.nn.LayerNorm(32)
        self.opt_proj = torch.nn.Linear(32, 16)

    @property
    def device(self) -> torch.device:
        return self.opt_proj.weight.device


def _runner(**run: object) -> ExpBlipRunner:
    """The runner's optimizer and scheduler properties, without datasets or output folders."""
    cfg = {"init_lr": 1e-3, "min_lr": 0.0, "weight_decay": 0.05, "device": "cpu",
           "distributed": False, "max_epoch": 2, "lr_sched": COSINE, **run}
    runner = ExpBlipRunner.__new__(ExpBlipRunner)
    runner.config = SimpleNamespace(run_cfg=OmegaConf.create(cfg))
    runner._model, runner._wrapped_model, runner._device = _Captioner(), None, None
    runner._optimizer = runner._lr_sched = None
    return runner


def _lr_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> float:
    return next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_encoder_depths() -> None:
    assert encoder_layer("visual_encoder.cls_token", 39) == 0
    assert encoder_layer("visual_encoder.patch_embed.proj.weight", 39) == 0
    assert encoder_layer("visual_encoder.vit.pos_embed", 12) == 0
    assert encoder_layer("visual_encoder.blocks.0.attn.qkv.weight", 39) == 1
    assert encoder_layer("visual_encoder.vit.blocks.11.mlp.fc2.bias", 12) == 12
    assert encoder_layer("visual_encoder.vit.norm.weight", 12) == 13
    assert encoder_layer("Qformer.bert.encoder.layer.0.attention.self.query.weight", 39) is None


def test_groups_scale_by_depth_and_keep_weight_decay_rule() -> None:
    model = _Captioner()
    groups = layer_decay_groups(model.named_parameters(), weight_decay=0.05, decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    vit = model.visual_encoder.vit
    assert scale[id(vit.patch_embed.proj.weight)] == 0.5 ** 3
    assert scale[id(vit.blocks[0].attn.qkv.weight)] == 0.5 ** 2
    assert scale[id(vit.blocks[1].attn.qkv.weight)] == 0.5
    assert scale[id(vit.norm.weight)] == 1.0 and scale[id(model.opt_proj.weight)] == 1.0
    assert wd[id(vit.blocks[0].attn.qkv.weight)] == 0.05
    assert wd[id(vit.blocks[0].attn.qkv.bias)] == 0.0 and wd[id(model.ln_vision.weight)] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_runner_optimizer_and_schedulers_apply_the_scales() -> None:
    runner = _runner(lr_layer_decay=0.5)
    optimizer = runner.optimizer
    assert runner.optimizer is optimizer  # built once
    vit = runner.model.visual_encoder.vit
    assert type(runner.lr_scheduler) is registry.get_lr_scheduler_class(COSINE)
    cosine = ScaledWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                           warmup_steps=0)
    cosine.step(cur_epoch=0, cur_step=0)
    assert _lr_of(optimizer, runner.model.opt_proj.weight) == pytest.approx(1e-3)
    assert _lr_of(optimizer, vit.blocks[1].mlp.fc1.weight) == pytest.approx(5e-4)
    assert _lr_of(optimizer, vit.patch_embed.proj.weight) == pytest.approx(1.25e-4)
    warmup = ScaledWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                           warmup_steps=10, warmup_start_lr=0.0)
    warmup.step(cur_epoch=0, cur_step=5)
    assert _lr_of(optimizer, vit.blocks[0].attn.qkv.weight) == pytest.approx(5e-4 * 0.25)
    assert registry.get_lr_scheduler_class(STEP) is ScaledWarmupStepLRScheduler
    step = ScaledWarmupStepLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                       decay_rate=0.5, warmup_steps=0)
    step.step(cur_epoch=1, cur_step=0)
    assert _lr_of(optimizer, vit.blocks[1].mlp.fc1.weight) == pytest.approx(5e-4 * 0.5)
    # LAVIS's own scheduler (stock) writes one lr everywhere, so the runner refuses it
    LinearWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                  warmup_steps=0).step(cur_epoch=0, cur_step=0)
    assert _lr_of(optimizer, vit.patch_embed.proj.weight) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"run\.lr_sched='linear_warmup_cosine_lr'.*lr_layer_decay"):
        _runner(lr_layer_decay=0.5, lr_sched="linear_warmup_cosine_lr").lr_scheduler


def test_without_decay_lavis_optimizer_is_unchanged() -> None:
    runner = _runner()
    optimizer = runner.optimizer
    assert len(optimizer.param_groups) == 2 and "lr_scale" not in optimizer.param_groups[0]
    ScaledWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                  warmup_steps=0).step(cur_epoch=0, cur_step=0)
    assert all(g["lr"] == pytest.approx(1e-3) for g in optimizer.param_groups)
    with pytest.raises(ValueError, match="lr_layer_decay"):
        _runner(lr_layer_decay=-1).optimizer
