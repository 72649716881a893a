"""Where the Q-Former looks: its cross-attention over the image tokens, as maps on the face.

Each cross-attention layer of LAVIS's Q-Former (``BertSelfAttention`` with
``is_cross_attention``) turns its scores into probabilities and passes them through its
``dropout`` module before weighting the values. A forward hook on
``<layer>.crossattention.self.dropout`` therefore sees the probabilities, shaped
(batch, heads, queries, keys), without patching LAVIS and without changing the forward pass
(in eval mode the dropout is the identity; in training mode the hook still reads the
pre-dropout input). The keys are the image encoder's tokens: for EVA ViT-G at 224 px a CLS
token and then a 16 x 16 patch grid in row-major order; the tiny conv-stem encoder has no CLS
and a 7 x 7 grid at 112 px.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lavis_ext.errors import InputError


def _qformer(model: nn.Module) -> nn.Module:
    """The Q-Former of a BLIP-2 model (``model.Qformer``), or ``model`` if it is one."""
    qformer = getattr(model, "Qformer", model)
    bert = getattr(qformer, "bert", qformer)
    if not hasattr(getattr(bert, "encoder", None), "layer"):
        raise InputError(f"{type(model).__name__} has no Q-Former (no Qformer.bert.encoder."
                         "layer): only BLIP-2 style models can be explained")
    return bert


def cross_attention_dropouts(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(layer index, dropout module) for every Q-Former layer that cross-attends.

    With ``cross_attention_freq`` = 2 (BLIP-2's default) only every other layer has a
    ``crossattention`` block; the others are skipped.
    """
    found = []
    for index, layer in enumerate(_qformer(model).encoder.layer):
        block = getattr(layer, "crossattention", None)
        if getattr(layer, "has_cross_attention", block is not None) and block is not None:
            found.append((index, block.self.dropout))
    if not found:
        raise InputError("the Q-Former has no cross-attention layers to read")
    return found


class CrossAttentionCapture:
    """A context manager that records every cross-attention probability tensor.

    Use it around whatever runs the Q-Former (``generate``, a caption call, a forward pass);
    each Q-Former call adds one tensor per cross-attention layer. ``probabilities()``
    concatenates the calls along the batch, so a captioner that splits its input into model
    batches still gives one row per image, in order.
    """

    def __init__(self, model: nn.Module, keep_graph: bool = False):
        """``keep_graph``: keep the tensors on their device and in the autograd graph (for a
        loss on the attention); by default they are detached float copies on the CPU."""
        self.layers = cross_attention_dropouts(model)
        self.keep_graph = keep_graph
        self._records: dict[int, list[torch.Tensor]] = {i: [] for i, _ in self.layers}
        self._handles: list[Any] = []

    def _hook(self, index: int) -> Any:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            probs = inputs[0]
            self._records[index].append(probs if self.keep_graph
                                        else probs.detach().float().cpu())
        return record

    def __enter__(self) -> "CrossAttentionCapture":
        self._handles = [module.register_forward_hook(self._hook(index))
                         for index, module in self.layers]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        for records in self._records.values():
            records.clear()

    def probabilities(self) -> torch.Tensor:
        """(layers, batch, heads, queries, keys): every recorded call, batches concatenated."""
        counts = {len(r) for r in self._records.values()}
        if counts == {0}:
            raise RuntimeError("no cross-attention was recorded: run the model inside the "
                               "capture")
        if len(counts) != 1:
            raise RuntimeError(f"the cross-attention layers were called unequally often "
                               f"({sorted(counts)})")
        return torch.stack([torch.cat(self._records[i], dim=0) for i, _ in self.layers])


@dataclass(frozen=True)
class TokenGrid:
    """How the keys lay out: an optional leading CLS token, then a rows x cols patch grid."""

    rows: int
    cols: int
    has_cls: bool

    @property
    def num_keys(self) -> int:
        return self.rows * self.cols + int(self.has_cls)


def _encoder_grid(visual_encoder: nn.Module | None) -> tuple[tuple[int, int] | None,
                                                             bool | None]:
    """The patch grid and CLS presence the encoder declares, where it declares them."""
    if visual_encoder is None:
        return None, None
    inner = getattr(visual_encoder, "vit", visual_encoder)  # TokenViT wraps timm's ViT
    embed = getattr(inner, "patch_embed", None)
    shape = getattr(embed, "patch_shape", None) or getattr(embed, "grid_size", None)
    has_cls = getattr(inner, "cls_token", None) is not None
    return (tuple(int(v) for v in shape) if shape else None), has_cls  # type: ignore


def token_grid(num_keys: int, visual_encoder: nn.Module | None = None) -> TokenGrid:
    """The key layout from the key count, checked against what the encoder declares.

    An encoder with a ``patch_embed`` (EVA, timm) states its grid and whether it has a CLS
    token; the tiny conv stem states neither, so its grid is the square that the key count
    is (with a CLS token when only the count minus one is a square).
    """
    shape, has_cls = _encoder_grid(visual_encoder)
    if shape is not None:
        rows, cols = shape
        for cls in ((has_cls,) if has_cls is not None else (True, False)):
            if rows * cols + int(cls) == num_keys:
                return TokenGrid(rows, cols, bool(cls))
        raise InputError(f"the cross-attention has {num_keys} keys, but the image encoder "
                         f"declares a {rows}x{cols} grid{' + CLS' if has_cls else ''}")
    for cls in ((has_cls,) if has_cls else (False, True)):
        side = math.isqrt(num_keys - int(cls))
        if side > 0 and side * side == num_keys - int(cls):
            return TokenGrid(side, side, bool(cls))
    raise InputError(f"cannot lay {num_keys} image tokens out as a square patch grid "
                     "(with or without a CLS token)")


@dataclass
class AttentionMaps:
    """Per-image maps: ``queries`` (Q, rows, cols) and their ``mean`` (rows, cols).

    Each query's map sums to the attention its heads and layers gave the patches (1 minus the
    CLS share), so masses inside regions are comparable across queries and images.
    """

    queries: np.ndarray
    mean: np.ndarray
    grid: TokenGrid


def to_maps(probabilities: torch.Tensor, grid: TokenGrid) -> list[AttentionMaps]:
    """Average (layers, batch, heads, Q, K) over heads and layers, drop CLS, reshape.

    Heads and layers are averaged with equal weight (no head selection: which heads matter
    is not known for a fine-tuned Q-Former).
    """
    if probabilities.dim() != 5:
        raise InputError(f"expected (layers, batch, heads, queries, keys), got "
                         f"{tuple(probabilities.shape)}")
    if probabilities.shape[-1] != grid.num_keys:
        raise InputError(f"{probabilities.shape[-1]} keys do not match the {grid} layout")
    averaged = probabilities.float().mean(dim=(0, 2))  # (batch, Q, K)
    patches = averaged[..., int(grid.has_cls):]
    maps = patches.reshape(*patches.shape[:2], grid.rows, grid.cols).numpy()
    return [AttentionMaps(queries=m, mean=m.mean(axis=0), grid=grid) for m in maps]


def visual_encoder_of(model: nn.Module) -> nn.Module | None:
    return getattr(model, "visual_encoder", None)


@torch.no_grad()
def query_attention(model: nn.Module, images: torch.Tensor) -> list[AttentionMaps]:
    """Run only the image encoder and the Q-Former on preprocessed ``images`` and return
    their maps (no caption; for callers that already have one)."""
    with CrossAttentionCapture(model) as capture:
        embeds = model.ln_vision(model.visual_encoder(images)).float()
        atts = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
        query = model.query_tokens.expand(embeds.shape[0], -1, -1)
        _qformer(model)(query_embeds=query, encoder_hidden_states=embeds,
                        encoder_attention_mask=atts, return_dict=True)
    probs = capture.probabilities()
    return to_maps(probs, token_grid(probs.shape[-1], visual_encoder_of(model)))


def upsample(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A patch-grid map resized to (width, height) pixels, bilinearly (the patches are
    centred on their cells, as the ViT's tokens are)."""
    import cv2

    return cv2.resize(np.asarray(grid_map, dtype=np.float32), size,
                      interpolation=cv2.INTER_LINEAR)



def cue_maps_on_grid(maps: torch.Tensor, grid: TokenGrid,
                     image_size: tuple[int, int]) -> torch.Tensor:
    """AU-cue targets (batch, rows, cols) on the patch grid, from maps given either on the
    grid already or at the image's pixels (``image_size`` = (height, width), what the
    datasets give: then area-averaged, each cell the mean of its patch's pixels, as ATT-COS
    averages the heatmap onto the grid). So the grid is the encoder's, never configured."""
    maps = maps.float()
    shape = tuple(maps.shape[1:])
    if maps.dim() == 3 and shape == (grid.rows, grid.cols):
        return maps
    height, width = image_size
    if maps.dim() == 3 and shape == (height, width) and height % grid.rows == 0 \
            and width % grid.cols == 0:
        return nn.functional.avg_pool2d(maps[:, None], (height // grid.rows,
                                                        width // grid.cols))[:, 0]
    raise InputError(
        f"au_cue_map of shape {tuple(maps.shape)} is not on the {grid.rows}x{grid.cols} "
        f"patch grid of the image encoder, nor at the images' {height}x{width} pixels (a "
        "whole number of pixels per patch): give batch x rows x cols maps, or the maps "
        "face_image_train_au_cue draws at its image_size")


def alignment_loss(probabilities: torch.Tensor, heatmaps: torch.Tensor, grid: TokenGrid,
                   weight: float = 9.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` * (1 - cos(mean attention, heatmap)), averaged over the images that have
    a cue.

    The building block of the AU-cue alignment loss (Belharbi et al. use 9.0 next to their
    cross-entropy): ``probabilities`` from a ``keep_graph`` capture, (layers, batch, heads,
    queries, keys); ``heatmaps`` (batch, rows, cols), already on the patch grid
    (``cue_maps_on_grid``). Images whose heatmap is all zeros (no cue AUs) or whose ``mask``
    (batch; the datasets' ``au_cue_mask``) is 0 add nothing. ``ExpBlip`` adds it to its LM
    loss when ``model.au_cue_loss.weight`` > 0.
    """
    if heatmaps.shape[1:] != (grid.rows, grid.cols):
        raise InputError(f"heatmaps of shape {tuple(heatmaps.shape)} are not on the "
                         f"{grid.rows}x{grid.cols} patch grid")
    attention = probabilities.float().mean(dim=(0, 2, 3))[:, int(grid.has_cls):]
    target = heatmaps.reshape(heatmaps.shape[0], -1).to(attention)
    has_cue = target.abs().sum(dim=1) > 0
    if mask is not None:
        mask = torch.as_tensor(mask, device=has_cue.device).reshape(-1)
        if mask.shape[0] != has_cue.shape[0]:
            raise InputError(f"au_cue_mask has {mask.shape[0]} values for a batch of "
                             f"{has_cue.shape[0]} au_cue_map maps")
        has_cue = has_cue & (mask > 0)
    if not bool(has_cue.any()):
        return attention.sum() * 0.0  # keeps the graph (and the device) for the caller
    cos = nn.functional.cosine_similarity(attention[has_cue], target[has_cue], dim=1)
    return weight * (1.0 - cos).mean()
