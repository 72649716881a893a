"""Resumable pipeline steps and the launcher for LAVIS training runs.

Every step writes a marker (``<workdir>/.steps/<name>.json``) when it finishes; a rerun skips
finished steps. A training run that crashed restarts from the newest checkpoint in its
output folder (LAVIS's ``run.resume_ckpt_path``). Training goes in-process for one process,
or through ``python -m torch.distributed.run`` for several.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import OmegaConf

from lavis_ext.data.records import atomic_write_text


class _CountWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextlib.contextmanager
def _captured(log: Path) -> Iterator[_CountWarnings]:
    """The body's prints, progress bars and log records go to ``log`` only; yields a counter
    of the warnings among them. Console logging handlers are muted for the body (LAVIS's
    logging and the plugin's per-record warnings), the file handlers keep everything."""
    root = logging.getLogger()
    console = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in console]
    counter = _CountWarnings()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as stream, _fds_to(stream), \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        for handler in console:
            handler.setLevel(logging.CRITICAL + 1)
        root.addHandler(counter)
        try:
            yield counter
        finally:
            root.removeHandler(counter)
            for handler, level in zip(console, levels):
                handler.setLevel(level)


@contextlib.contextmanager
def _fds_to(stream: Any) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``stream`` too: child processes (pycocoevalcap's
    Java tokenizer) and native code write there, not to ``sys.stdout``."""
    for handle in (sys.stdout, sys.stderr):
        handle.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        for fd in (1, 2):
            os.dup2(stream.fileno(), fd)
        yield
    finally:
        stream.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


class Steps:
    """Run named steps once per workdir; print what is skipped and how long each took.

    With ``capture`` (a log file), a step's own output (LAVIS's training lines, progress bars,
    per-record warnings) goes to that file, and the console gets one line per step:
    ``[step] name ... done (N s): <summary>``, the summary written by
    ``summarize(name, result)``, with the count of warnings the file received.
    """

    def __init__(self, workdir: str | os.PathLike, echo: Callable[[str], None] = print, *,
                 capture: str | os.PathLike | None = None,
                 summarize: Callable[[str, Any], str] | None = None):
        self.workdir = Path(workdir)
        self.markers = self.workdir / ".steps"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self.capture = Path(capture) if capture else None
        self.summarize = summarize
        self.timings: dict[str, float] = {}

    def done(self, name: str) -> bool:
        return (self.markers / f"{name}.json").exists()

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        marker = self.markers / f"{name}.json"
        if marker.exists():
            self.echo(f"[skip] {name}: finished in an earlier run")
            return json.loads(marker.read_text())["result"]
        started = time.monotonic()
        warnings = None
        if self.capture is None:
            self.echo(f"[step] {name}")
            result = fn(*args, **kwargs)
        else:  # one console line: its start now, its end when the step is done
            console = sys.stdout
            console.write(f"[step] {name} ... ")
            console.flush()
            try:
                with _captured(self.capture) as warnings:
                    result = fn(*args, **kwargs)
            except BaseException:
                console.write(f"failed after {time.monotonic() - started:.0f} s; its output "
                              f"is in {self.capture}\n")
                console.flush()
                raise
        self.timings[name] = time.monotonic() - started
        atomic_write_text(marker, json.dumps({"result": result, "seconds": self.timings[name]},
                                             default=str))
        line = f"({self.timings[name]:.0f} s)"
        if self.summarize is not None:
            line += f": {self.summarize(name, result)}"
        if warnings is None:
            self.echo(f"[done] {name} {line}")
            return result
        if warnings.count:
            line += f"; {warnings.count} warnings in {self.capture.name}"
        console.write(f"done {line}\n")
        console.flush()
        return result


# Written in a training run's output folder when the run ends; a rerun of a step whose
# first stage finished and whose second was killed must not train (or resume) the first again.
FINISHED = "stage_finished.json"


def _budget(cfg: Any) -> dict[str, Any]:
    """What a finished run was trained for: a config that asks for more resumes it."""
    return {key: cfg.run.get(key) for key in ("max_epoch", "max_iters")}


def train_stage(cfg_path: str | os.PathLike, options: list[str] | None = None, *,
                nproc: int = 1, action: str = "train") -> str:
    """Train (or evaluate) one configured stage; returns the run's output folder.

    A run that finished (its output folder holds ``stage_finished.json`` for the same
    ``max_epoch`` / ``max_iters``) is not trained again. A folder holding checkpoints but no
    such record (a crashed or killed attempt) is resumed from its newest checkpoint.
    """
    from lavis_ext.models.checkpoint import newest_checkpoint

    options = list(options or [])
    cfg = OmegaConf.merge(OmegaConf.load(str(cfg_path)), OmegaConf.from_dotlist(options))
    output_dir = str(cfg.run.output_dir)
    finished = Path(output_dir) / FINISHED
    if action == "train" and finished.exists():
        record = json.loads(finished.read_text())
        if record.get("budget") == _budget(cfg):
            print(f"{cfg_path}: finished earlier ({finished}), not trained again")
            return output_dir
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
    if action == "train":
        atomic_write_text(finished, json.dumps({"budget": _budget(cfg),
                                                "checkpoint": newest_checkpoint(output_dir)}))
    return output_dir
