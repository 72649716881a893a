"""Checkpoint loading that never unpickles code, honours ``load_pretrained`` and resumes.

Fixes in LAVIS 1.0.2:

* ``torch.load`` is called without ``weights_only`` in every loader (``BaseModel.load_checkpoint``,
  ``Blip2Base.load_from_pretrained``, the runners' ``_load_checkpoint`` and
  ``_reload_best_model``, the ViT builders, ...). On torch < 2.6, or with
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, that unpickles arbitrary objects from a downloaded
  file. Inside those modules the name ``torch`` is overlaid so that ``torch.load`` always passes
  ``weights_only=True``, and ``torch.save`` writes to a temporary file and renames it, so a crash
  while saving never leaves a truncated ``checkpoint_*.pth`` behind. LAVIS's own checkpoints
  (model and optimizer state dicts, the config as a plain dict from ``OmegaConf.to_container``,
  the scaler state dict, the epoch) load under ``weights_only=True`` unchanged.
* ``BaseModel.load_checkpoint_from_config`` ignores ``load_pretrained: False`` and calls
  ``is_url(None)`` (``TypeError``), so a model cannot be trained from scratch; a missing local
  file gives "checkpoint url or path is invalid" without naming it. The replacement skips loading
  when ``load_pretrained`` is false and names the file and the config key otherwise.
* ``RunnerBase._load_checkpoint`` and ``RunnerIter._load_checkpoint`` (``run.resume_ckpt_path``) load the model strictly, but
  ``_save_checkpoint`` drops frozen parameters from what it saves, so resuming any model with a
  frozen part (BLIP-2's image encoder, the LLM) fails with missing keys. The replacement accepts
  exactly the frozen parameters as missing, restores optimizer, scaler and epoch (iteration), says
  clearly when the path does not exist or when the checkpoint is already the end of training.
* ``RunnerIter._save_checkpoint`` (``run.runner: runner_iter``) saves the whole state dict,
  frozen LLM and image encoder included, unlike ``RunnerBase``: with OPT-6.7B every checkpoint
  carries 13 GB of weights that never change, and a warm start from it overwrites another
  model's LLM. The replacement drops frozen parameters exactly as ``RunnerBase`` does.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from lavis_ext.compat import CHECKPOINT_MODULES  # noqa: F401  (re-exported: listed in the registry)
from lavis_ext.compat._patch import Overlay
from lavis_ext.io import atomic_save_torch

def safe_load(f: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """``torch.load`` through the package's one weights-only loader (imported when first
    called: ``lavis_ext.models`` registers with LAVIS, which runs these fixes)."""
    from lavis_ext.models.checkpoint import load_weights_only

    return load_weights_only(f, map_location=map_location, **kwargs)


# The one atomic torch writer (lavis_ext.io); the name stays for the overlay below.
atomic_save = atomic_save_torch


def resolve_checkpoint(url_or_filename: Any, key: str) -> str:
    """A local file for ``url_or_filename`` (downloaded if a URL); errors name ``key``."""
    from lavis_ext.models.checkpoint import newest_checkpoint
    from lavis_ext.models.weights import fetch_url, is_url

    if url_or_filename is None or str(url_or_filename).strip() == "":
        raise ValueError(f"{key} is not set: give a checkpoint file path or URL")
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


def _load_checkpoint_from_config(self: Any, cfg: Any, **kwargs: Any) -> None:
    """Finetuned weights if ``load_finetuned``; else pretrained ones unless ``load_pretrained`` is false."""
    if cfg.get("load_finetuned", True):
        path = resolve_checkpoint(cfg.get("finetuned", None), "model.finetuned (model.load_finetuned is True)")
        self.load_checkpoint(url_or_filename=path)
        return
    if not cfg.get("load_pretrained", True):
        logging.info("model.load_pretrained is False: keeping the freshly initialised weights")
        return
    path = resolve_checkpoint(cfg.get("pretrained", None), "model.pretrained (model.load_pretrained is True)")
    if not hasattr(self, "load_from_pretrained"):
        raise AttributeError(
            f"{type(self).__name__} cannot load model.pretrained (it has no load_from_pretrained); "
            "set model.load_pretrained: False or give model.finetuned with load_finetuned: True"
        )
    self.load_from_pretrained(url_or_filename=path, **kwargs)


def frozen_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters runner checkpoints leave out (``requires_grad`` off)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


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


def _restore_training_state(self: Any, url_or_filename: Any, progress_key: str) -> tuple[str, dict]:
    """Load model, optimizer and scaler from a runner checkpoint; returns its path and content."""
    path = resolve_checkpoint(url_or_filename, "run.resume_ckpt_path")
    checkpoint = safe_load(path, map_location=self.device)
    for field in ("model", "optimizer", progress_key):
        if field not in checkpoint:
            raise KeyError(f"run.resume_ckpt_path: {path} has no '{field}' entry; is it a checkpoint of this runner?")
    load_model_state(self.unwrap_dist_model(self.model), checkpoint["model"], source=path)
    self.optimizer.load_state_dict(checkpoint["optimizer"])
    if self.scaler is not None and checkpoint.get("scaler"):
        self.scaler.load_state_dict(checkpoint["scaler"])
    return path, checkpoint


def _resume_from_checkpoint(self: Any, url_or_filename: Any) -> None:
    """``RunnerBase``: restore model, optimizer, scaler and the next epoch."""
    path, checkpoint = _restore_training_state(self, url_or_filename, "epoch")
    self.start_epoch = int(checkpoint["epoch"]) + 1
    if self.start_epoch >= self.max_epoch:
        raise ValueError(
            f"run.resume_ckpt_path: {path} was saved after epoch {checkpoint['epoch']}, the last one "
            f"for run.max_epoch={self.max_epoch}; raise run.max_epoch to train further"
        )
    logging.info("Resumed from %s: continuing at epoch %d", path, self.start_epoch)


def _resume_iters_from_checkpoint(self: Any, url_or_filename: Any) -> None:
    """``RunnerIter``: restore model, optimizer, scaler and the next iteration.

    The saved ``iters`` is the end (exclusive) of the inner epoch just finished, so training
    continues there (LAVIS adds 1, which shifts every later inner epoch by one iteration).
    """
    path, checkpoint = _restore_training_state(self, url_or_filename, "iters")
    self.start_iters = int(checkpoint["iters"])
    if self.start_iters >= self.max_iters:
        raise ValueError(
            f"run.resume_ckpt_path: {path} was saved at iteration {checkpoint['iters']}, the end of "
            f"run.max_iters={self.max_iters}; raise run.max_iters to train further"
        )
    logging.info("Resumed from %s: continuing at iteration %d", path, self.start_iters)


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without frozen parameters (buffers kept), as ``RunnerBase`` saves it."""
    frozen = frozen_parameter_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def _save_iters_checkpoint(self: Any, cur_iters: int, is_best: bool = False) -> None:
    from lavis.common.dist_utils import is_main_process

    if not is_main_process():
        return
    save_obj = {
        "model": trainable_state_dict(self.unwrap_dist_model(self.model)),
        "optimizer": self.optimizer.state_dict(),
        "config": self.config.to_dict(),
        "scaler": self.scaler.state_dict() if self.scaler else None,
        "iters": cur_iters,
    }
    path = os.path.join(self.output_dir, f"checkpoint_{'best' if is_best else cur_iters}.pth")
    logging.info("Saving checkpoint at iters %d to %s.", cur_iters, path)
    atomic_save(save_obj, path)


def patch_torch(torch_module: Any) -> Overlay:
    """Patch factory for the name ``torch`` in each of ``CHECKPOINT_MODULES``."""
    return Overlay(torch_module, load=safe_load, save=atomic_save)


def patch_load_checkpoint_from_config(stock: Any) -> Any:
    """Patch factory for ``BaseModel.load_checkpoint_from_config``."""
    return _load_checkpoint_from_config


def patch_resume(stock: Any) -> Any:
    """Patch factory for ``RunnerBase._load_checkpoint``."""
    return _resume_from_checkpoint


def patch_resume_iters(stock: Any) -> Any:
    """Patch factory for ``RunnerIter._load_checkpoint``."""
    return _resume_iters_from_checkpoint


def patch_save_iters(stock: Any) -> Any:
    """Patch factory for ``RunnerIter._save_checkpoint``."""
    return _save_iters_checkpoint
