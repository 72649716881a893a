"""Fixes to LAVIS 1.0.2 on current torch, on CPU-only and on offline machines.

One module per concern, each saying in its header what it fixes and why (see
``docs/compat.md`` for the table of failures, modules and tests). ``apply_all`` applies them
all; every patch is guarded, so calling it again (or applying one module twice) changes
nothing.
"""
from __future__ import annotations

_APPLIED = False


def apply_all() -> None:
    """Apply every compatibility fix (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    from lavis_ext.compat import (
        amp,
        checkpoints,
        concat_collater,
        distributed,
        layer_decay,
        loaders,
        logger_sync,
        optims,
        model_type_default,
        output_dir,
        process_group,
        run_context,
        runner_model,
    )

    optims.apply()
    layer_decay.apply()
    loaders.apply()
    runner_model.apply()
    logger_sync.apply()
    distributed.apply()
    run_context.apply()
    checkpoints.apply()
    amp.apply()
    output_dir.apply()
    process_group.apply()
    concat_collater.apply()
    model_type_default.apply()
    _APPLIED = True
