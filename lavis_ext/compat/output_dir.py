"""Resolve a relative ``run.output_dir`` against the working directory.

``RunnerBase.setup_output_dir`` joins ``run.output_dir`` to the registry's ``library_root``,
which is the installed ``lavis`` package: with a pip-installed LAVIS, every stock project YAML
(``output_dir: "output/BLIP2/..."``) writes checkpoints into ``site-packages/lavis/output``.
The wrapper makes a relative ``run.output_dir`` absolute against the current working directory
before LAVIS builds its folders (absolute paths are unchanged), so outputs land where the user
launched training. The resolved path is what ends up in the saved config and ``log.txt``.

It also lets a process build more than one runner (train stage 1 then stage 2, evaluate after
training, a notebook): LAVIS registers ``output_dir`` and ``result_dir`` with
``registry.register_path``, which raises ``KeyError: Name 'result_dir' already registered`` for
the second runner. The wrapper drops the previous runner's two entries first, so the registry
always points at the current runner's folders.
"""
from __future__ import annotations

import functools
import os
from typing import Any

RUNNER_PATHS = ("output_dir", "result_dir")


def patch_setup_output_dir(setup_output_dir: Any) -> Any:
    """Patch factory for ``RunnerBase.setup_output_dir``."""

    @functools.wraps(setup_output_dir)
    def setup_output_dir_from_cwd(self: Any) -> None:
        run_cfg = self.config.run_cfg
        output_dir = run_cfg.get("output_dir", None)
        if not output_dir:
            raise ValueError("run.output_dir is not set: give the folder for checkpoints and logs")
        run_cfg.output_dir = os.path.abspath(os.path.expanduser(str(output_dir)))
        from lavis.common.registry import registry

        for name in RUNNER_PATHS:
            registry.mapping["paths"].pop(name, None)
        setup_output_dir(self)

    return setup_output_dir_from_cwd
