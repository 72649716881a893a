"""Register LAVIS's learning-rate schedulers.

LAVIS 1.0.2 registers ``linear_warmup_cosine_lr`` and ``linear_warmup_step_lr`` as a side effect of importing ``lavis.common.optims``, which ``import lavis``
does not do (the repository's own ``train.py`` imports it by hand). Without it
``RunnerBase.lr_scheduler`` looks the name up, gets ``None`` and fails with
``'NoneType' object is not callable``. Importing the module here registers them for every
entry point that imports ``lavis_ext``.
"""
from __future__ import annotations

import importlib

SCHEDULERS = ("linear_warmup_cosine_lr", "linear_warmup_step_lr")


def apply() -> None:
    importlib.import_module("lavis.common.optims")
