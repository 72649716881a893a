"""Reading weight files safely, and reporting how a state dict matched a model.

Weights are read with ``torch.load(weights_only=True)`` (or safetensors): a checkpoint
from the internet is never unpickled blindly.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Mapping

import torch
from torch import nn

from lavis_ext.models.paths import MissingModelFileError

_WRAPPER_KEYS = ("model", "state_dict", "module")


def is_url(path: str) -> bool:
    return str(path).startswith(("http://", "https://"))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file (tensors, numbers, strings, dicts only)."""
    path = str(path)
    if is_url(path):
        from lavis.common.dist_utils import download_cached_file

        path = download_cached_file(path, check_hash=False, progress=True)
    if not os.path.isfile(path):
        raise MissingModelFileError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and the reason
        raise ValueError(f"{path}: cannot be read as a weights-only checkpoint ({err}). "
                         "Checkpoints holding pickled Python objects are refused; re-save "
                         "the state dict with tensors only.") from None


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint, unwrapping ``{"model": ...}``-style containers."""
    checkpoint = read_checkpoint(path)
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _group(key: str) -> str:
    """Top-level module of a parameter name, for readable reports (``Qformer``, ``opt_proj``)."""
    return key.split(".", 1)[0]


def load_state_dict_report(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str) -> dict[str, Any]:
    """Load non-strictly and log missing/unexpected keys grouped by module; return the report.

    Shape mismatches are reported and skipped instead of raising mid-load.
    """
    own = model.state_dict()
    usable, mismatched = {}, []
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model "
                              f"{tuple(own[key].shape)}")
        else:
            usable[key] = value
    result = model.load_state_dict(usable, strict=False)
    report = {"source": source, "loaded": len(usable) - len(result.unexpected_keys),
              "missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "mismatched": mismatched}
    for name in ("missing", "unexpected"):
        groups: dict[str, int] = defaultdict(int)
        for key in report[name]:
            groups[_group(key)] += 1
        if groups:
            logging.info("%s: %s keys by module: %s", source, name, dict(groups))
    if mismatched:
        logging.warning("%s: %d tensors skipped for shape mismatch: %s", source,
                        len(mismatched), mismatched[:5])
    logging.info("%s: loaded %d tensors", source, report["loaded"])
    return report
