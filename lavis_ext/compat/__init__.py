"""The few changes to LAVIS 1.0.2 that no subclass or registration of the plugin can make.

Everything else the plugin needs from LAVIS comes from classes it owns and registers (runners
and schedulers in :mod:`lavis_ext.runners`, its models and tasks). What is left here: one
record in :data:`PATCHES` (the logger's reduction on gloo, on every stack), and
:data:`PROVIDES`, names put into transformers (not LAVIS) before LAVIS imports them on current
transformers. LAVIS's OPT class is not changed: the plugin's models build their own subclass
of it (:mod:`lavis_ext.models.opt`). Each record has an id, a ``"module:qualname"`` target,
a reason and the ``"module:function"`` factory that builds the replacement; ``docs/compat.md``
says why each one cannot be a subclass. :func:`apply_all` checks the LAVIS version, then applies the
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

_C = "lavis_ext.compat."

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

# The only changes lavis_ext makes to LAVIS itself (docs/compat.md says, for each, why no
# subclass or registration can do it). Everything else the plugin needs comes from classes it
# owns and registers: runners and schedulers (lavis_ext.runners), models, tasks.
PATCHES: tuple[Patch, ...] = (
    # logger_sync.py
    Patch("logger_sync.synchronize", "lavis.common.logger:SmoothedValue.synchronize_between_processes",
          "builds its reduction tensor on CUDA whenever a process group exists (fails on gloo); "
          "LAVIS's train loop creates the meters itself, so no subclass can be put in their place",
          _C + "logger_sync:patch_synchronize"),
)

# At most this many LAVIS attributes differ from what LAVIS shipped after `import lavis_ext`
# (tests/compat/test_compat_fingerprint.py compares processes attribute by attribute). The
# PROVIDES names are put into transformers modules, not into LAVIS, and are not counted.
MAX_LAVIS_CHANGES = 1

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


def lavis_changes() -> tuple[str, ...]:
    """The ``module:qualname`` of every LAVIS attribute the active records replace."""
    return tuple(patch.target for patch in active_patches())


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
           "check_lavis_version", "lavis_changes", "MAX_LAVIS_CHANGES", "provide_names", "requirement_met", "SUPPORTED_LAVIS"]
