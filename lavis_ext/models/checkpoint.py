"""Reading weight files safely, finding a run's newest checkpoint, and checking how a state
dict matched a model.

This is the one weights-only loader of the package (the compat overlay of ``torch.load`` in
LAVIS's modules uses it too) and the one newest-checkpoint search (stage 2's
``model.pretrained`` folder, resuming a crashed run, the pipeline). Weights are read with
``torch.load(weights_only=True)`` (or safetensors): a checkpoint from the internet is never
unpickled blindly.
"""
from __future__ import annotations

import glob
import logging
import os
import pickle
from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from lavis_ext.errors import InputError
from lavis_ext.models.paths import MissingModelFileError

_WRAPPER_KEYS = ("model", "state_dict", "module")
CHECKPOINT_GLOB = "checkpoint_*.pth"


class UnsafeCheckpointError(InputError, pickle.UnpicklingError):
    """A checkpoint holds pickled Python objects besides tensors and plain containers."""


def load_weights_only(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    Takes ``torch.load``'s arguments so that it can stand in for it; a request to unpickle
    (``weights_only=False``, ``pickle_module``) is ignored on purpose.
    """
    kwargs.pop("weights_only", None)
    kwargs.pop("pickle_module", None)
    try:
        return torch.load(f, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else repr(f)
        raise UnsafeCheckpointError(
            f"{name}: refused to load, it cannot be read as a weights-only checkpoint: it holds "
            "pickled Python objects besides tensors and plain containers. If you trust its "
            "source, re-save only its weights once: ckpt = torch.load(path, weights_only=False);"
            " torch.save({'model': ckpt['model']}, new_path). "
            f"torch said: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from error


def newest_checkpoint(folder: str | os.PathLike) -> str | None:
    """The most recently written ``checkpoint_*.pth`` anywhere under ``folder`` (LAVIS writes
    into ``<output_dir>/<job id>/``), or None."""
    found = glob.glob(os.path.join(str(folder), "**", CHECKPOINT_GLOB), recursive=True)
    return max(found, key=lambda p: (os.path.getmtime(p), p)) if found else None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file or URL (tensors, numbers, strings, dicts only)."""
    path = str(path)
    if path.startswith(("http://", "https://")):
        from lavis_ext.models.weights import fetch_url

        path = fetch_url(path, "checkpoint")
    if not os.path.isfile(path):
        raise MissingModelFileError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return load_weights_only(path, map_location="cpu", mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # legacy (pre-zip) files cannot be memory-mapped
            raise
        return load_weights_only(path, map_location="cpu")


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapping ``{"model": ...}``-style containers."""
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file."""
    return state_dict_of(read_checkpoint(path))


def _group(key: str) -> str:
    """Top-level module of a parameter name, for readable reports (``Qformer``, ``opt_proj``)."""
    return key.split(".", 1)[0]


class IncompleteCheckpointError(InputError, RuntimeError):
    """A checkpoint lacks weights that nothing else supplies (the model would be random)."""


class CheckpointKindError(InputError):
    """A checkpoint is of no kind the model can load (e.g. neither stage 1 nor stage 2)."""


def module_groups(keys: Iterable[str]) -> dict[str, int]:
    """Number of keys per top-level module, for messages that say what a file holds."""
    groups: dict[str, int] = defaultdict(int)
    for key in keys:
        groups[_group(key)] += 1
    return dict(groups)


def load_state_dict_report(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str, required: Iterable[str] = (),
                           unexpected_level: int = logging.INFO,
                           exempt: Iterable[str] = ()) -> dict[str, Any]:
    """Load non-strictly, report missing/unexpected keys grouped by module, return the report.

    ``required``: top-level modules (``Qformer``, ``query_tokens``, ...) that must all come
    from ``state_dict``; a missing key under one raises ``IncompleteCheckpointError`` with the
    report, before anything is loaded. ``exempt``: submodule paths inside required modules
    (``Qformer.cls``) that may be missing, for checkpoints known never to hold them (they
    keep their initial weights). Shape mismatches are reported and skipped.
    """
    exempt_prefixes = tuple(f"{path}." for path in exempt)
    own = model.state_dict()
    usable, mismatched = {}, []
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model "
                              f"{tuple(own[key].shape)}")
        else:
            usable[key] = value
    required = set(required)
    absent = [k for k in own if _group(k) in required and k not in usable
              and not k.startswith(exempt_prefixes)]
    if absent:
        raise IncompleteCheckpointError(
            f"{source}: the checkpoint lacks weights the model needs and nothing else supplies "
            f"(they would stay random): {module_groups(absent)} keys missing, e.g. {absent[:5]}"
            + (f"; shape mismatches: {mismatched[:3]}" if mismatched else "")
            + ". Is it a checkpoint of this architecture and model type?")
    result = model.load_state_dict(usable, strict=False)
    report = {"source": source, "loaded": len(usable) - len(result.unexpected_keys),
              "missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "mismatched": mismatched}
    for name, level in (("missing", logging.INFO), ("unexpected", unexpected_level)):
        groups = defaultdict(int)
        for key in report[name]:
            groups[_group(key)] += 1
        if groups:
            logging.log(level, "%s: %s keys by module: %s (e.g. %s)", source, name,
                        dict(groups), report[name][:3])
    if mismatched:
        logging.warning("%s: %d tensors skipped for shape mismatch: %s", source,
                        len(mismatched), mismatched[:5])
    logging.info("%s: loaded %d tensors", source, report["loaded"])
    return report
