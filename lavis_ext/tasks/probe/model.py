"""The model a probe run trains: an encoder's pooled features, standardised, then one linear
layer (or KE2NT's text-embedding head, ``text_head.py``)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from lavis_ext.errors import InputError

MODES = ("linear", "finetune")
SOURCES = ("vision", "qformer")


class ProbeModel(nn.Module):
    """``encoder.probe_features(image, source)`` -> BatchNorm (no affine) -> linear head.

    ``head``: another head on the standardised features instead of the linear one (for
    emotions: ``TextEmbeddingHead``, whose ``losses`` give the loss). ``features_fn``: other
    frozen features than ``probe_features`` (zero-shot: the ITC query projections), given to
    the head as they are when ``standardise`` is False. Batches carry either ``features``
    (linear mode: precomputed by the frozen encoder) or ``image`` (fine-tuning). With
    ``probe_target`` (and for AUs ``probe_mask``, 0 where not coded) the output has the loss
    the runner minimises.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, num_outputs: int, *,
                 source: str, mode: str, target: str, head: nn.Module | None = None,
                 features_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 standardise: bool = True) -> None:
        super().__init__()
        if mode not in MODES:
            raise InputError(f"run.probe.mode must be one of {MODES}, got {mode!r}")
        if source not in SOURCES:
            raise InputError(f"run.probe.source must be one of {SOURCES}, got {source!r}")
        self.encoder = encoder
        # MAE's linear-probe recipe: standardise features (BatchNorm without affine) so one
        # learning rate suits encoders whose feature scales differ by orders of magnitude.
        self.norm = nn.BatchNorm1d(feature_dim, affine=False)
        self.head = head if head is not None else nn.Linear(feature_dim, num_outputs)
        self.source, self.mode, self.target = source, mode, target
        if features_fn is not None and mode != "linear":
            raise InputError("other probe features than probe_features need run.probe.mode: "
                             f"linear, not {mode!r}")
        self.features_fn, self.standardise = features_fn, standardise
        if mode == "linear":
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        """Where the head lives; LAVIS's runner compares it with the run device."""
        return self.norm.running_mean.device

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, D]; with gradients into the encoder in fine-tuning mode."""
        if self.features_fn is not None:
            with torch.no_grad():
                return self.features_fn(image).float()
        method = self.encoder.probe_features
        if self.mode == "linear" or not torch.is_grad_enabled():
            with torch.no_grad():
                return method(image, self.source).float()
        # A probe_features decorated with @torch.no_grad() keeps the undecorated function in
        # __wrapped__ (functools.wraps); fine-tuning needs that one.
        inner = getattr(method, "__wrapped__", None)
        features = (inner(self.encoder, image, self.source) if inner is not None
                    else method(image, self.source)).float()
        if not features.requires_grad:
            raise RuntimeError("probe mode 'finetune' needs gradients through "
                               f"{type(self.encoder).__name__}.probe_features, but it returned "
                               "a tensor without grad (does it run under torch.no_grad?)")
        return features

    def forward(self, samples: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        features = samples["features"] if "features" in samples \
            else self.features(samples["image"])
        features = features.float().to(self.device)
        if self.standardise:
            features = self.norm(features)
        if "probe_target" in samples and hasattr(self.head, "losses"):
            return self.head.losses(features, samples["probe_target"].to(features.device))
        logits = self.head(features)
        out = {"logits": logits}
        if "probe_target" in samples:
            target = samples["probe_target"].to(logits.device)
            if self.target == "au":
                mask = samples["probe_mask"].to(logits.device).float()
                losses = nn.functional.binary_cross_entropy_with_logits(
                    logits.float(), target.float(), reduction="none")
                out["loss"] = (losses * mask).sum() / mask.sum().clamp(min=1.0)
            else:
                out["loss"] = nn.functional.cross_entropy(logits.float(), target.long())
        return out
