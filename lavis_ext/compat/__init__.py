"""Fixes to LAVIS 1.0.2 on current torch, on CPU-only and on offline machines.

Every fix is one record in :data:`PATCHES` (id, ``"module:qualname"`` target, reason, and the
``"module:function"`` factory that builds the replacement); the modules of this package hold
the factories and say in their headers what they fix and why (``docs/compat.md`` has the table
of failures, patches and tests). :func:`apply_all` checks the LAVIS version, then applies the
records in order through one mechanism (:mod:`lavis_ext.compat._patch`). Reading this list
imports neither LAVIS nor torch.

``import lavis_ext`` runs :func:`apply_all` from its post-import hook on ``lavis``.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys

from lavis_ext.compat._patch import (Patch, PatchConflict, PatchTargetError, Provide, apply_patch,
                                    provide, requirement_met)

SUPPORTED_LAVIS = "1.0.2"
LAVIS_DISTRIBUTION = "salesforce-lavis"

# LAVIS modules imported for what they register, not patched: LAVIS 1.0.2 registers its
# learning-rate schedulers (linear_warmup_cosine_lr, linear_warmup_step_lr) only when
# lavis.common.optims is imported, which `import lavis` does not do (its train.py imports it by
# hand); without them the runner fails with "'NoneType' object is not callable".
REGISTRATION_IMPORTS = ("lavis.common.optims",)
SCHEDULERS = ("linear_warmup_cosine_lr", "linear_warmup_step_lr")

# LAVIS modules that call torch.load / torch.save on checkpoints or results.
CHECKPOINT_MODULES = (
    "lavis.models.base_model",
    "lavis.models.blip2_models.blip2",
    "lavis.models.blip_models.blip",
    "lavis.models.blip_models.blip_nlvr",
    "lavis.models.albef_models",
    "lavis.models.albef_models.albef_vqa",
    "lavis.models.alpro_models",
    "lavis.models.clip_models.model",
    "lavis.models.eva_vit",
    "lavis.models.clip_vit",
    "lavis.models.timesformer.helpers",
    "lavis.models.img2prompt_models.img2prompt_vqa",
    "lavis.runners.runner_base",
    "lavis.runners.runner_iter",
    "lavis.tasks.vqa_reading_comprehension",
)

# LAVIS modules that imported prepare_sample by name (besides data_utils, which defines it).
PREPARE_SAMPLE_MODULES = ("lavis.datasets.data_utils", "lavis.tasks.base_task", "lavis.tasks.dialogue")

_C = "lavis_ext.compat."
_RB = "lavis.runners.runner_base:"
_RI = "lavis.runners.runner_iter:"
_OPT = "lavis.models.blip2_models.modeling_opt:"

# The `current` stack (requirements/constraints-current.txt): fixes that apply only from this
# transformers on; on the paper stack's 4.26.1 LAVIS works as shipped there.
CURRENT_TRANSFORMERS = "transformers>=4.46"

# Names LAVIS imports at module level that current libraries moved; provided before LAVIS is
# imported (import lavis_ext registers a post-import hook on each module; see provide_names).
PROVIDES: tuple[Provide, ...] = tuple(
    Provide(f"transformers_current.moved.{name}", f"transformers.modeling_utils:{name}",
            "LAVIS's med.py, nlvr_encoder.py and Qformer.py import it from modeling_utils, which no "
            "longer re-exports it from transformers.pytorch_utils: import lavis fails",
            _C + "transformers_current:from_pytorch_utils", CURRENT_TRANSFORMERS)
    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"))

PATCHES: tuple[Patch, ...] = (
    # layer_decay.py
    *(Patch(f"layer_decay.{name}", f"lavis.common.optims:{name}",
            "LAVIS's schedules write one lr into every group; honour a group's lr_scale",
            _C + "layer_decay:patch_schedule")
      for name in ("cosine_lr_schedule", "warmup_lr_schedule", "step_lr_schedule")),
    Patch("layer_decay.optimizer", _RB + "RunnerBase.optimizer",
          "run.lr_layer_decay: layer-wise lr decay for the image encoder (LAVIS 1.0.2 has none)",
          _C + "layer_decay:patch_optimizer"),
    # loaders.py
    Patch("loaders.iter_next", "lavis.datasets.datasets.dataloader_utils:IterLoader.__next__",
          "IterLoader sleeps 2 s at each pass over the data even without worker processes",
          _C + "loaders:patch_iter_next"),
    Patch("loaders.prefetch", _RB + "PrefetchLoader",
          "create_loaders wraps loaders in PrefetchLoader, which needs CUDA (torch.cuda.Stream)",
          _C + "loaders:patch_prefetch_loader"),
    Patch("loaders.pin_memory", _RB + "DataLoader",
          "every DataLoader pins memory, which warns and does nothing useful without a GPU",
          _C + "loaders:patch_dataloader"),
    Patch("loaders.create_loaders", _RB + "RunnerBase.create_loaders",
          "lets the two factories above see the run device", _C + "loaders:patch_create_loaders"),
    # runner_model.py
    Patch("runner_model.model", _RB + "RunnerBase.model",
          "the property returns None when the model is already on the run device (always on "
          "CPU) and passes device_ids to DDP on CPU", _C + "runner_model:patch_model"),
    # logger_sync.py
    Patch("logger_sync.synchronize", "lavis.common.logger:SmoothedValue.synchronize_between_processes",
          "builds its reduction tensor on CUDA whenever a process group exists (fails on gloo)",
          _C + "logger_sync:patch_synchronize"),
    # distributed.py
    Patch("distributed.init", "lavis.common.dist_utils:init_distributed_mode",
          "hard-codes nccl and torch.cuda.set_device, so CPU (gloo) launches fail",
          _C + "distributed:patch_init_distributed_mode"),
    *(Patch(f"distributed.barrier.{module}", f"{prefix}dist",
            "the runners call dist.barrier() after every epoch, which raises without a group",
            _C + "distributed:patch_runner_dist")
      for module, prefix in (("runner_base", _RB), ("runner_iter", _RI))),
    # run_context.py
    *(Patch(f"run_context.prepare_sample.{module}", f"{module}:prepare_sample",
            "eval_epoch leaves cuda_enabled at True, so prepare_sample moves batches to CUDA "
            "whatever the run device", _C + "run_context:patch_prepare_sample")
      for module in PREPARE_SAMPLE_MODULES),
    *(Patch(f"run_context.{method}", f"{prefix}{cls}.{method}",
            "makes the runner the active runner while it trains or evaluates (read by amp and "
            "prepare_sample)", _C + "run_context:patch_runner_method")
      for prefix, cls, method in ((_RB, "RunnerBase", "train_epoch"), (_RB, "RunnerBase", "eval_epoch"),
                                  (_RI, "RunnerIter", "train_iters"))),
    # checkpoints.py
    *(Patch(f"checkpoints.torch.{module}", f"{module}:torch",
            "torch.load without weights_only unpickles code; torch.save is not atomic",
            _C + "checkpoints:patch_torch")
      for module in CHECKPOINT_MODULES),
    Patch("checkpoints.load_from_config", "lavis.models.base_model:BaseModel.load_checkpoint_from_config",
          "ignores load_pretrained: False (TypeError from is_url(None)); errors do not name the file",
          _C + "checkpoints:patch_load_checkpoint_from_config"),
    Patch("checkpoints.resume", _RB + "RunnerBase._load_checkpoint",
          "resuming loads strictly although checkpoints leave frozen parameters out",
          _C + "checkpoints:patch_resume"),
    Patch("checkpoints.resume_iters", _RI + "RunnerIter._load_checkpoint",
          "same as checkpoints.resume; also resumes one iteration late",
          _C + "checkpoints:patch_resume_iters"),
    Patch("checkpoints.save_iters", _RI + "RunnerIter._save_checkpoint",
          "saves frozen parameters too (13 GB per checkpoint with OPT-6.7B), unlike RunnerBase",
          _C + "checkpoints:patch_save_iters"),
    # amp.py
    Patch("amp.scaler", _RB + "RunnerBase.scaler",
          "torch.cuda.amp.GradScaler: deprecated, CUDA only, always fp16",
          _C + "amp:patch_scaler"),
    Patch("amp.train_loop", "lavis.tasks.base_task:torch",
          "the train loop enters torch.cuda.amp.autocast whatever the run device and dtype",
          _C + "amp:patch_train_loop_torch"),
    Patch("amp.maybe_autocast", "lavis.models.blip2_models.blip2:Blip2Base.maybe_autocast",
          "torch.cuda.amp.autocast on any non-CPU device; no bfloat16 on CPU",
          _C + "amp:patch_maybe_autocast"),
    # output_dir.py
    Patch("output_dir.setup", _RB + "RunnerBase.setup_output_dir",
          "relative output_dir lands inside the installed lavis package; a second runner in one "
          "process fails with KeyError 'result_dir'", _C + "output_dir:patch_setup_output_dir"),
    # process_group.py
    Patch("process_group.dist", "lavis.models.blip2_models.blip2_qformer:dist",
          "Blip2Qformer.forward calls dist.get_rank(), which needs a process group",
          _C + "process_group:patch_dist"),
    *(Patch(f"process_group.{name}", f"lavis.models.blip2_models.blip2_qformer:{name}",
            "gathers call get_world_size(), which needs a process group",
            _C + "process_group:patch_gather")
      for name in ("concat_all_gather", "all_gather_with_grad")),
    # concat_collater.py
    Patch("concat_collater.collater", "lavis.datasets.datasets.base_dataset:ConcatDataset.collater",
          "crashes on a sample skipped because its image failed to decode",
          _C + "concat_collater:patch_collater"),
    # model_type_default.py
    Patch("model_type_default.load_model", "lavis.models:load_model.__defaults__",
          "model_type is required although the model classes name a default type",
          _C + "model_type_default:patch_load_model_defaults"),
    Patch("model_type_default.load_model_and_preprocess",
          "lavis.models:load_model_and_preprocess.__defaults__",
          "model_type is required although the model classes name a default type",
          _C + "model_type_default:patch_load_model_and_preprocess_defaults"),
    # transformers_current.py (current transformers only)
    Patch("transformers_current.prepare_inputs", _OPT + "OPTForCausalLM.prepare_inputs_for_generation",
          "generate passes the cache as past_key_values (LAVIS reads past: no cache is used) and "
          "expands query_embeds for beams again (beam search fails in torch.cat)",
          _C + "transformers_current:patch_prepare_inputs_for_generation", CURRENT_TRANSFORMERS),
    Patch("transformers_current.generation_mixin", _OPT + "OPTForCausalLM.__bases__",
          "PreTrainedModel no longer inherits GenerationMixin: LAVIS's OPT has no generate",
          _C + "transformers_current:patch_opt_bases", CURRENT_TRANSFORMERS),
)

_applied: set[str] = set()


class UnsupportedLavisVersion(RuntimeError):
    """The installed LAVIS is not the version these fixes were written and tested against."""


def lavis_version() -> str | None:
    """The installed salesforce-lavis version; None when there is no distribution metadata."""
    try:
        return importlib.metadata.version(LAVIS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_lavis_version() -> None:
    """Refuse any LAVIS but 1.0.2, and a LAVIS whose version cannot be read.

    A source checkout put on ``sys.path`` by hand has no distribution metadata; it is refused
    too, since nothing says which LAVIS it is. ``pip install -e <checkout>`` gives it metadata.
    """
    version = lavis_version()
    install = f"install it with: pip install {LAVIS_DISTRIBUTION}=={SUPPORTED_LAVIS}"
    if version is None:
        where = getattr(sys.modules.get("lavis"), "__file__", None) or "sys.path"
        raise UnsupportedLavisVersion(
            f"lavis_ext supports LAVIS ({LAVIS_DISTRIBUTION}) {SUPPORTED_LAVIS} only, and cannot "
            f"tell which LAVIS is imported from {where}: no '{LAVIS_DISTRIBUTION}' distribution "
            f"metadata is installed (a source checkout on sys.path?). {install} "
            "(or pip install -e <checkout> for a 1.0.2 checkout)"
        )
    if version != SUPPORTED_LAVIS:
        raise UnsupportedLavisVersion(
            f"lavis_ext supports LAVIS ({LAVIS_DISTRIBUTION}) {SUPPORTED_LAVIS} only; "
            f"{LAVIS_DISTRIBUTION} {version} is installed. {install}"
        )


def active_patches() -> tuple[Patch, ...]:
    """The records that apply to the installed versions (``requires``), in list order."""
    return tuple(patch for patch in PATCHES if patch.active())


def active_provides() -> tuple[Provide, ...]:
    return tuple(record for record in PROVIDES if record.active())


def provide_names(module: object) -> None:
    """Post-import hook on a module named by :data:`PROVIDES`: put the missing names there."""
    name = getattr(module, "__name__", "")
    for record in active_provides():
        if record.module == name and record.id not in _applied:
            provide(record, module)
            _applied.add(record.id)


def apply_all() -> None:
    """Check the LAVIS version, then apply every active patch not applied yet, in list order."""
    check_lavis_version()
    for record in active_provides():  # normally done by the hooks before LAVIS was imported
        provide_names(importlib.import_module(record.module))
    for module in REGISTRATION_IMPORTS:
        importlib.import_module(module)
    for patch in active_patches():
        if patch.id not in _applied:
            apply_patch(patch)
            _applied.add(patch.id)


def applied() -> frozenset[str]:
    """Ids of the patches and provided names applied in this process."""
    return frozenset(_applied)


__all__ = ["PATCHES", "PROVIDES", "Patch", "PatchConflict", "PatchTargetError", "Provide",
           "UnsupportedLavisVersion", "active_patches", "active_provides", "apply_all", "applied",
           "check_lavis_version", "provide_names", "requirement_met", "SUPPORTED_LAVIS"]
