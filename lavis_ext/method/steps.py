"""Resumable pipeline steps and the launcher for LAVIS training runs.

Every step writes a marker (``<workdir>/.steps/<name>.json``) when it finishes; a rerun skips
finished steps. A training run that crashed restarts from the newest checkpoint in its
output folder (LAVIS's ``run.resume_ckpt_path``). Training goes in-process for one process,
or through ``python -m torch.distributed.run`` for several.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from lavis_ext.data.records import atomic_write_text


class Steps:
    """Run named steps once per workdir; print what is skipped and how long each took."""

    def __init__(self, workdir: str | os.PathLike, echo: Callable[[str], None] = print):
        self.workdir = Path(workdir)
        self.markers = self.workdir / ".steps"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self.timings: dict[str, float] = {}

    def done(self, name: str) -> bool:
        return (self.markers / f"{name}.json").exists()

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        marker = self.markers / f"{name}.json"
        if marker.exists():
            self.echo(f"[skip] {name}: finished in an earlier run")
            return json.loads(marker.read_text())["result"]
        self.echo(f"[step] {name}")
        started = time.monotonic()
        result = fn(*args, **kwargs)
        self.timings[name] = time.monotonic() - started
        atomic_write_text(marker, json.dumps({"result": result, "seconds": self.timings[name]},
                                             default=str))
        self.echo(f"[done] {name} ({self.timings[name]:.0f} s)")
        return result


def train_stage(cfg_path: str | os.PathLike, options: list[str] | None = None, *,
                nproc: int = 1, action: str = "train") -> str:
    """Train (or evaluate) one configured stage; returns the run's output folder.

    A folder already holding checkpoints (a crashed earlier attempt) is resumed from its
    newest checkpoint.
    """
    from lavis_ext.models.checkpoint import newest_checkpoint

    options = list(options or [])
    cfg = OmegaConf.merge(OmegaConf.load(str(cfg_path)), OmegaConf.from_dotlist(options))
    output_dir = str(cfg.run.output_dir)
    previous = newest_checkpoint(output_dir) if action == "train" else None
    if previous and not cfg.run.get("resume_ckpt_path"):
        print(f"resuming {cfg_path} from {previous}")
        options.append(f"run.resume_ckpt_path={os.path.abspath(previous)}")
    argv = ["--cfg-path", str(cfg_path)] + (["--options", *options] if options else [])
    if nproc <= 1:
        from lavis_ext.entry import evaluate_main, train_main

        (train_main if action == "train" else evaluate_main)(argv)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "-m", "lavis_ext.entry", action, *argv]
        subprocess.run(command, check=True)
    return output_dir
