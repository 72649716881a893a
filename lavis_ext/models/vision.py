"""Vision encoders for the Q-Former: EVA ViT-G, ViT-B/16 (MAE), and a tiny conv-stem ViT.

Each encoder maps images [B, 3, H, W] to tokens [B, N, C] and exposes ``num_features`` = C,
which is what LAVIS's BLIP-2 code expects of ``visual_encoder``. Weights go through the
weight resolver (weights.py): EVA from ``vit_weights`` / ``$LAVIS_EXT_EVA_VIT_G`` / LAVIS's
cache / a download of ``eva_vit_g.pth``, MAE from ``vit_weights`` / ``$LAVIS_EXT_VIT_B_MAE``
(never published).
"""
from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

import torch
from torch import nn

from lavis_ext.errors import InputError
from lavis_ext.models import precision as precision_policy
from lavis_ext.models.checkpoint import load_weights_file
from lavis_ext.models.weights import PARTS, RANDOM, resolve

ENCODERS = ("eva_clip_g", "vit_b_mae", "tiny", "tiny_eva")
VIT_PARTS = {"eva_clip_g": "eva_vit_g", "vit_b_mae": "vit_b_mae"}  # weight manifest names
WEIGHT_ENVS = {name: PARTS[part].env for name, part in VIT_PARTS.items()}


def vit_weights_source(name: str, weights: str | None, optional: bool = False) -> str:
    """A weight file for encoder ``name``, or ``random`` (when configured so, or when a
    finetuned checkpoint supplies the encoder).

    ``optional``: a finetuned checkpoint will supply the encoder, so nothing is looked up or
    downloaded unless configured; loading that checkpoint then requires the encoder's keys.
    """
    part = VIT_PARTS[name]
    if optional and weights in (None, "") and not os.environ.get(PARTS[part].env):
        return RANDOM
    return resolve(part, weights)


class TinyVisionEncoder(nn.Module):
    """A conv stem (4 stride-2 layers, as in the tiny-captioner probe) + optional transformer
    blocks.

    Pure patch-embedding ViTs this small learn the caption language but not to look at the
    image in minutes of CPU training; a conv stem learns both (see shared/facts). Every conv is
    followed by a normalisation (``norm``: ``batch``, ``group`` or ``none``): without one, the
    default conv init shrinks the signal about 3x per layer, so the stem's output is ~50x
    smaller than the learned positions and the captioner learns one caption for all faces.
    """

    NORMS = ("batch", "group", "none")

    def __init__(self, img_size: int = 112, width: int = 128, depth: int = 0, num_heads: int = 4,
                 channels: tuple[int, ...] = (32, 64, 96), norm: str = "batch"):
        super().__init__()
        from timm.models.vision_transformer import Block

        if norm not in self.NORMS:
            raise InputError(f"model.vision.norm must be one of {self.NORMS}, got {norm!r}")
        widths = (3, *channels, width)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            elif norm == "group":
                layers.append(nn.GroupNorm(1, c_out))
            if i < len(widths) - 2:
                layers.append(nn.GELU())
        self.stem = nn.Sequential(*layers)
        side = img_size
        for _ in range(len(widths) - 1):
            side = (side + 1) // 2
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(width, num_heads, qkv_bias=True) for _ in range(depth))
        self.num_features = width
        self.image_size = img_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(image).flatten(2).transpose(1, 2)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise InputError(f"TinyVisionEncoder was built for {self.image_size}px images; got "
                             f"{tuple(image.shape[-2:])} (set model.image_size and the "
                             f"processors' image_size to the same value)")
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


class TokenViT(nn.Module):
    """timm 0.4.12's ViT returning all tokens (CLS + patches) instead of the pooled CLS."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, drop_path_rate: float = 0.0):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size,
                                     embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                     mlp_ratio=4.0, qkv_bias=True, num_classes=0,
                                     drop_path_rate=drop_path_rate,
                                     norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.num_features = embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed(image)
        x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = vit.pos_drop(x + vit.pos_embed)
        for block in vit.blocks:
            x = block(x)
        return vit.norm(x)


_MAE_PREFIXES = ("module.", "encoder.", "backbone.", "model.", "visual_encoder.")


def load_mae_weights(encoder: TokenViT, path: str) -> dict[str, list[str]]:
    """Load an MAE (or timm) ViT-B checkpoint; return the keys that were not loaded.

    MAE saves ``{"model": state_dict}`` including its decoder; DDP and other wrappers add
    prefixes. Decoder keys are dropped, prefixes stripped, positions interpolated.
    """
    state = load_weights_file(path)
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in _MAE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(("decoder", "mask_token", "head.", "fc_norm")):
            continue
        cleaned[key] = value
    if "pos_embed" in cleaned and cleaned["pos_embed"].shape != encoder.vit.pos_embed.shape:
        cleaned["pos_embed"] = _resize_positions(cleaned["pos_embed"],
                                                 encoder.vit.pos_embed.shape[1])
    result = encoder.vit.load_state_dict(cleaned, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if report["missing"] or report["unexpected"]:
        logging.warning("ViT-B MAE weights from %s: %d keys not loaded (%s), %d unused (%s)",
                        path, len(report["missing"]), report["missing"][:8],
                        len(report["unexpected"]), report["unexpected"][:8])
    return report


def _resize_positions(pos: torch.Tensor, target_len: int) -> torch.Tensor:
    """Bicubic resize of [1, 1 + n*n, C] position embeddings (CLS kept)."""
    cls, grid = pos[:, :1], pos[:, 1:]
    old, new = int(grid.shape[1] ** 0.5), int((target_len - 1) ** 0.5)
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid.float(), size=(new, new), mode="bicubic",
                                     align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(pos.dtype)],
                     dim=1)


def build_eva_vit_g(img_size: int, drop_path_rate: float, use_grad_checkpoint: bool,
                    weights: str | None) -> nn.Module:
    """LAVIS's EVA ViT-G/14 architecture, with weights from a local file instead of a URL."""
    from lavis.models.eva_vit import VisionTransformer, interpolate_pos_embed

    model = VisionTransformer(img_size=img_size, patch_size=14, use_mean_pooling=False,
                              embed_dim=1408, depth=39, num_heads=1408 // 88, mlp_ratio=4.3637,
                              qkv_bias=True, drop_path_rate=drop_path_rate,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6),
                              use_checkpoint=use_grad_checkpoint)
    if weights != RANDOM:
        state = load_weights_file(weights)
        interpolate_pos_embed(model, state)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            logging.warning("EVA ViT-G: %d keys missing from %s: %s", len(result.missing_keys),
                            weights, result.missing_keys[:8])
    return model


def build_tiny_eva(img_size: int, drop_path_rate: float = 0.0, patch_size: int = 14,
                   width: int = 64, depth: int = 2, num_heads: int = 4,
                   mlp_ratio: float = 4.0) -> nn.Module:
    """LAVIS's EVA ViT (the ViT-G class) at toy width and depth, random weights: what
    ``expblip export-hf`` is tested on (the conv-stem ``tiny`` has no transformers twin)."""
    from lavis.models.eva_vit import VisionTransformer

    if width % num_heads or (width * mlp_ratio) != int(width * mlp_ratio):
        raise InputError(f"model.vision: width {width} must divide by num_heads {num_heads} "
                         f"and width * mlp_ratio ({width * mlp_ratio}) be a whole number")
    return VisionTransformer(img_size=img_size, patch_size=patch_size, use_mean_pooling=False,
                             embed_dim=width, depth=depth, num_heads=num_heads,
                             mlp_ratio=mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))


def build_vision_encoder(name: str, img_size: int, *, drop_path_rate: float = 0.0,
                         use_grad_checkpoint: bool = False, precision: str = "fp32",
                         weights: str | None = None, weights_optional: bool = False,
                         options: dict[str, Any] | None = None,
                         device: str | torch.device = "cpu",
                         llm_dtype: torch.dtype | None = None) -> tuple[nn.Module, nn.Module]:
    """Build ``visual_encoder`` and its ``ln_vision`` LayerNorm, as BLIP-2 names them.

    ``precision`` (``model.vit_precision``) is read for the ``device`` the model will run on,
    beside an LLM of ``llm_dtype`` (``lavis_ext.models.precision.vit_dtype``).

    ``weights_optional``: a finetuned checkpoint will overwrite the encoder (see
    ``vit_weights_source``).
    """
    from lavis.models.blip2_models.blip2 import LayerNorm

    options = dict(options or {})
    dtype = precision_policy.vit_dtype(precision, device, llm_dtype)  # bad values before building
    if name not in ENCODERS:
        raise InputError(f"model.vit_model must be one of {ENCODERS}, got {name!r}")
    if name == "tiny":
        encoder: nn.Module = TinyVisionEncoder(img_size=img_size, **options)
    elif name == "tiny_eva":
        encoder = build_tiny_eva(img_size, drop_path_rate, **options)
    else:
        path = vit_weights_source(name, weights, weights_optional)
        if name == "eva_clip_g":
            encoder = build_eva_vit_g(img_size, drop_path_rate, use_grad_checkpoint, path)
        else:
            encoder = TokenViT(img_size=img_size, drop_path_rate=drop_path_rate, **options)
            if path != RANDOM:
                encoder.load_report = load_mae_weights(encoder, path)
    if dtype != torch.float32:
        encoder = encoder.to(dtype)
    return encoder, LayerNorm(encoder.num_features)
