"""``run.optimizer_impl``: which of torch's AdamW kernels the runner's optimizer uses."""
from __future__ import annotations

from typing import Any

import torch

from lavis_ext.errors import InputError


OPTIMIZER_IMPLS = ("fused", "foreach")


def with_implementation(optimizer: torch.optim.Optimizer, run_cfg: Any) -> torch.optim.Optimizer:
    """``run.optimizer_impl``: the same AdamW (groups, lr, betas, weight decay) with torch's
    ``fused`` or ``foreach`` kernels; unset keeps the optimizer as built. On CPU torch defaults
    to one small loop per tensor, ~6% of a tiny model's step (the demo sets ``fused``); the
    update is the same algorithm, equal up to float rounding."""
    impl = run_cfg.get("optimizer_impl", None)
    if impl in (None, "", "default"):
        return optimizer
    if impl not in OPTIMIZER_IMPLS:
        raise InputError(f"run.optimizer_impl must be one of {OPTIMIZER_IMPLS} (or unset), "
                         f"got {impl!r}")
    if type(optimizer) is not torch.optim.AdamW:
        raise InputError(f"run.optimizer_impl={impl!r} rebuilds an AdamW; this run's optimizer "
                         f"is {type(optimizer).__name__}")
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")}
              for g in optimizer.param_groups]
    return torch.optim.AdamW(groups, **{impl: True})
