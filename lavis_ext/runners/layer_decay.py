"""``run.lr_layer_decay``: layer-wise learning-rate decay for the image encoder.

The paper fine-tunes ViT-G in stage 2 with layer-wise lr decay 0.95 (ViT-B: 1, none). LAVIS
1.0.2 cannot express it: ``RunnerBase.optimizer`` puts every trainable parameter into two
groups (with and without weight decay), and its schedule functions (``cosine_lr_schedule``,
``warmup_lr_schedule``, ``step_lr_schedule``) write one lr into every group at each step. Later
LAVIS releases added ``lr_layer_decay`` with an ``lr_scale`` per group; this does the same here:

* the plugin's runners' ``optimizer`` (``lavis_ext.runners``): with ``run.lr_layer_decay`` below 1, the image
  encoder's parameters are grouped by depth. Embeddings (patch/conv stem, class token,
  positions) are layer 0, block ``i`` is layer ``i + 1``, the rest of the encoder is layer
  ``n + 1``; a group's ``lr_scale`` is ``decay ** (n + 1 - layer)``. Everything outside the
  encoder (Q-Former, projection) keeps scale 1. Weight decay follows LAVIS's rule. Without the
  setting (or at 1) LAVIS's own optimizer is built, unchanged.
* the plugin's schedulers (``lavis_ext.runners.schedulers``) multiply the lr LAVIS's
  schedulers write by the group's ``lr_scale`` (default 1), so runs without it see exactly
  LAVIS's rates.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable

import torch

from lavis_ext.errors import InputError


ENCODER_PREFIX = "visual_encoder."
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:cls_token|pos_embed|patch_embed|mask_token|stem)(?:\.|$)")


def encoder_layer(name: str, num_blocks: int) -> int | None:
    """Depth of an image-encoder parameter (None outside the encoder)."""
    if not name.startswith(ENCODER_PREFIX):
        return None
    rest = name[len(ENCODER_PREFIX):]
    block = _BLOCK.search(rest)
    if block:
        return int(block.group(1)) + 1
    if _EMBEDDING.search(rest):
        return 0
    return num_blocks + 1


def _no_weight_decay(name: str, param: torch.Tensor) -> bool:
    # LAVIS's rule in RunnerBase.optimizer.
    return param.ndim < 2 or "bias" in name or "ln" in name or "bn" in name


def layer_decay_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                       weight_decay: float, decay: float) -> list[dict[str, Any]]:
    """Optimizer groups keyed by (lr scale, weight decay) for trainable parameters."""
    params = [(n, p) for n, p in named_parameters if p.requires_grad]
    blocks = {int(m.group(1)) for n, _ in params if n.startswith(ENCODER_PREFIX)
              for m in [_BLOCK.search(n[len(ENCODER_PREFIX):])] if m}
    num_blocks = max(blocks) + 1 if blocks else 0
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in params:
        layer = encoder_layer(name, num_blocks)
        scale = 1.0 if layer is None else decay ** (num_blocks + 1 - layer)
        wd = 0.0 if _no_weight_decay(name, param) else weight_decay
        group = groups.setdefault((scale, wd), {"params": [], "weight_decay": wd,
                                                "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


def layer_decay_optimizer(model: torch.nn.Module, run_cfg: Any) -> torch.optim.Optimizer | None:
    """AdamW with per-depth lr scales for the image encoder when ``run.lr_layer_decay`` < 1;
    None when the setting is unset or 1 (the runner then builds LAVIS's own optimizer)."""
    decay = float(run_cfg.get("lr_layer_decay", 1.0) or 1.0)
    if decay >= 1.0:
        if decay > 1.0:
            raise InputError(f"run.lr_layer_decay must be in (0, 1], got {decay}")
        return None
    if decay <= 0:
        raise InputError(f"run.lr_layer_decay must be in (0, 1], got {decay}")
    groups = layer_decay_groups(model.named_parameters(), float(run_cfg.weight_decay), decay)
    scales = sorted({g["lr_scale"] for g in groups})
    logging.info("layer-wise lr decay %.3g: %d groups, lr scales %.3g..%.3g",
                 decay, len(groups), scales[0], scales[-1])
    return torch.optim.AdamW(groups, lr=float(run_cfg.init_lr), weight_decay=float(run_cfg.weight_decay),
                             betas=(0.9, run_cfg.get("beta2", 0.999)))

