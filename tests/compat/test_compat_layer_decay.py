"""run.lr_layer_decay: per-depth lr scales for the image encoder survive LAVIS's schedulers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (applies the fixes)
from lavis.common.optims import LinearWarmupCosineLRScheduler, LinearWarmupStepLRScheduler
from lavis.runners.runner_base import RunnerBase
from lavis_ext.compat.layer_decay import encoder_layer, layer_decay_groups
from lavis_ext.models.vision import TokenViT


class _Captioner(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual_encoder = TokenViT(img_size=32, patch_size=16, embed_dim=32, depth=2,
                                       num_heads=2)
        self.ln_vision = torch.nn.LayerNorm(32)
        self.opt_proj = torch.nn.Linear(32, 16)


def _runner(**run: object) -> SimpleNamespace:
    cfg = {"init_lr": 1e-3, "weight_decay": 0.05, **run}
    return SimpleNamespace(_optimizer=None, model=_Captioner(),
                           config=SimpleNamespace(run_cfg=OmegaConf.create(cfg)),
                           unwrap_dist_model=lambda model: model)


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
    optimizer = RunnerBase.optimizer.fget(runner)
    assert RunnerBase.optimizer.fget(runner) is optimizer  # built once
    vit = runner.model.visual_encoder.vit
    cosine = LinearWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                           warmup_steps=0)
    cosine.step(cur_epoch=0, cur_step=0)
    assert _lr_of(optimizer, runner.model.opt_proj.weight) == pytest.approx(1e-3)
    assert _lr_of(optimizer, vit.blocks[1].mlp.fc1.weight) == pytest.approx(5e-4)
    assert _lr_of(optimizer, vit.patch_embed.proj.weight) == pytest.approx(1.25e-4)
    warmup = LinearWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                           warmup_steps=10, warmup_start_lr=0.0)
    warmup.step(cur_epoch=0, cur_step=5)
    assert _lr_of(optimizer, vit.blocks[0].attn.qkv.weight) == pytest.approx(5e-4 * 0.25)
    step = LinearWarmupStepLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                       decay_rate=0.5, warmup_steps=0)
    step.step(cur_epoch=1, cur_step=0)
    assert _lr_of(optimizer, vit.blocks[1].mlp.fc1.weight) == pytest.approx(5e-4 * 0.5)


def test_without_decay_lavis_optimizer_is_unchanged() -> None:
    runner = _runner()
    optimizer = RunnerBase.optimizer.fget(runner)
    assert len(optimizer.param_groups) == 2 and "lr_scale" not in optimizer.param_groups[0]
    LinearWarmupCosineLRScheduler(optimizer, max_epoch=2, min_lr=0.0, init_lr=1e-3,
                                  warmup_steps=0).step(cur_epoch=0, cur_step=0)
    assert all(g["lr"] == pytest.approx(1e-3) for g in optimizer.param_groups)
    with pytest.raises(ValueError, match="lr_layer_decay"):
        RunnerBase.optimizer.fget(_runner(lr_layer_decay=-1))
