"""Checkpoints of the plugin's runners and models: weights only, atomic, strict-but-frozen.

What LAVIS 1.0.2 does, and what the plugin's classes do instead (they call these functions):

* ``BaseModel.load_checkpoint_from_config`` ignores ``load_pretrained: False`` and calls
  ``is_url(None)`` (``TypeError``), so a model cannot be trained from scratch; a missing local
  file gives "checkpoint url or path is invalid" without naming it. :func:`load_from_config`
  (``ExpBlipParts.load_checkpoint_from_config``) skips loading when ``load_pretrained`` is false
  and names the file and the config key otherwise.
* ``RunnerBase._load_checkpoint`` and ``RunnerIter._load_checkpoint`` (``run.resume_ckpt_path``)
  load the model strictly, but ``_save_checkpoint`` drops frozen parameters from what it saves,
  so resuming any model with a frozen part (BLIP-2's image encoder, the LLM) fails with missing
  keys. :func:`restore_training_state` accepts exactly the frozen parameters as missing,
  restores optimizer and scaler, and the runners say clearly when the path does not exist or
  when the checkpoint is already the end of training.
* ``RunnerIter._save_checkpoint`` saves the whole state dict, frozen LLM and image encoder
  included (13 GB per checkpoint with OPT-6.7B), and both runners' ``torch.save`` is not atomic:
  a crash while saving leaves a truncated ``checkpoint_*.pth``. :func:`save_runner_checkpoint`
  drops frozen parameters (as ``RunnerBase`` does) and writes through ``lavis_ext.io``'s atomic
  writer.
* Every load here goes through the package's one weights-only loader. LAVIS's own loaders
  (``_reload_best_model``, ``load_checkpoint``) call ``torch.load`` without ``weights_only``;
  torch >= 2.6 (both stacks have 2.14) defaults it to True, so they are left stock.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from lavis_ext.errors import InputError, MissingEntryError
from lavis_ext.io import atomic_save_torch

def safe_load(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` through the package's one weights-only loader (imported when first
    called: ``lavis_ext.models`` registers with LAVIS, which runs these fixes)."""
    from lavis_ext.models.checkpoint import load_weights_only

    return load_weights_only(f, map_location=map_location, **kwargs)




def resolve_checkpoint(url_or_filename: Any, key: str) -> str:
    """A local file for ``url_or_filename`` (downloaded if a URL); errors name ``key``."""
    from lavis_ext.models.checkpoint import newest_checkpoint
    from lavis_ext.models.weights import fetch_url, is_url

    if url_or_filename is None or str(url_or_filename).strip() == "":
        raise InputError(f"{key} is not set: give a checkpoint file path or URL")
    value = str(url_or_filename)
    if is_url(value):
        return fetch_url(value, "checkpoint", key.split(" ", 1)[0])
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        # A run's output folder: LAVIS writes into <output_dir>/<job id>/, so a config can
        # name the folder and get its newest checkpoint.
        found = newest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{key}: no checkpoint_*.pth under {os.path.abspath(path)}")
        logging.info("%s: using the newest checkpoint in %s: %s", key, path, found)
        return found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: checkpoint file not found: {os.path.abspath(path)}")
    return path


def load_from_config(model: Any, cfg: Any, **kwargs: Any) -> None:
    """Finetuned weights if ``load_finetuned``; else pretrained ones unless ``load_pretrained`` is false."""
    if cfg.get("load_finetuned", True):
        path = resolve_checkpoint(cfg.get("finetuned", None), "model.finetuned (model.load_finetuned is True)")
        model.load_checkpoint(url_or_filename=path)
        return
    if not cfg.get("load_pretrained", True):
        logging.info("model.load_pretrained is False: keeping the freshly initialised weights")
        return
    path = resolve_checkpoint(cfg.get("pretrained", None), "model.pretrained (model.load_pretrained is True)")
    if not hasattr(model, "load_from_pretrained"):
        raise AttributeError(
            f"{type(model).__name__} cannot load model.pretrained (it has no load_from_pretrained); "
            "set model.load_pretrained: False or give model.finetuned with load_finetuned: True"
        )
    model.load_from_pretrained(url_or_filename=path, **kwargs)


def frozen_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters runner checkpoints leave out (``requires_grad`` off), under every name.

    Tied parameters (OPT's ``lm_head.weight`` is its input embedding) are listed under each of
    their names (``remove_duplicate=False``): LAVIS's own filter reads ``named_parameters()``,
    which gives a tied tensor one name only, so its checkpoints keep a frozen copy of the LLM's
    output layer (0.4 GB for OPT-6.7B in bf16)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False)
            if not p.requires_grad}


def load_model_state(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Load a runner checkpoint, allowing only the frozen parameters it left out to be missing."""
    result = model.load_state_dict(state_dict, strict=False)
    frozen = frozen_parameter_names(model)
    missing = [k for k in result.missing_keys if k not in frozen]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{source}: checkpoint does not match the model: missing trainable keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {result.unexpected_keys[:10]}"
            f"{' ...' if len(result.unexpected_keys) > 10 else ''}"
        )


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without frozen parameters (buffers kept), as ``RunnerBase`` saves it."""
    frozen = frozen_parameter_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def restore_training_state(runner: Any, url_or_filename: Any, progress_key: str) -> tuple[str, dict]:
    """Load model, optimizer and scaler from a runner checkpoint; returns its path and content."""
    path = resolve_checkpoint(url_or_filename, "run.resume_ckpt_path")
    checkpoint = safe_load(path, map_location=runner.device)
    for field in ("model", "optimizer", progress_key):
        if field not in checkpoint:
            raise MissingEntryError(f"run.resume_ckpt_path: {path} has no '{field}' entry; is "
                                    f"it a checkpoint of this runner?")
    load_model_state(runner.unwrap_dist_model(runner.model), checkpoint["model"], source=path)
    runner.optimizer.load_state_dict(checkpoint["optimizer"])
    if runner.scaler is not None and checkpoint.get("scaler"):
        runner.scaler.load_state_dict(checkpoint["scaler"])
    return path, checkpoint


def save_runner_checkpoint(runner: Any, progress_key: str, progress: int, is_best: bool) -> str:
    """Write ``checkpoint_<progress|best>.pth`` with the trainable weights, atomically.

    The entries are LAVIS's (``model``, ``optimizer``, ``config``, ``scaler`` and ``epoch`` or
    ``iters``), so LAVIS's own ``_reload_best_model`` and ``load_checkpoint`` read the file.
    Called on the main process only (the runners check).
    """
    payload = {
        "model": trainable_state_dict(runner.unwrap_dist_model(runner.model)),
        "optimizer": runner.optimizer.state_dict(),
        "config": runner.config.to_dict(),
        "scaler": runner.scaler.state_dict() if runner.scaler else None,
        progress_key: progress,
    }
    name = "best" if is_best else str(progress)
    path = os.path.join(str(runner.output_dir), f"checkpoint_{name}.pth")
    logging.info("Saving checkpoint (%s %d) to %s.", progress_key, progress, path)
    atomic_save_torch(payload, path)
    return path
