"""Atomic file writes: the one place the package writes a file that others may read.

A crash (or Ctrl-C, or a full disk) during a write leaves either the old file or the new one,
never a truncated one, because the content goes to a temporary file in the same folder that
is then renamed over the target (``os.replace`` is atomic on one filesystem). This module
imports nothing heavy; ``atomic_save_torch`` imports torch only when called.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_save_torch",
           "read_json_list"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a temporary binary file, sync it, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_save_torch(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save`` to a path atomically; a file object is written to directly."""
    import torch

    if not isinstance(f, (str, os.PathLike)):
        torch.save(obj, f, *args, **kwargs)
        return
    atomic_write(f, lambda handle: torch.save(obj, handle, *args, **kwargs))


# --- Paths ---------------------------------------------------------------------------------
# One rule for relative paths in configs:
# * LAVIS run configs (train.py / evaluate.py --cfg-path; the dataset builders and the
#   facial_captioning task's references) carry no file location once LAVIS has merged them,
#   so their relative data paths are relative to the working directory, like LAVIS's own
#   ``run.output_dir``. The pipeline and the demo write run configs with absolute paths.
# * Pipeline configs (``expblip pipeline --config``) know their file: their relative paths
#   are relative to the project root, the folder holding the ``projects/`` folder the config
#   lives in (so ``projects/au_blip/stage1.yaml`` and ``data/prepared/bp4d`` mean the same
#   from any working directory), or to the config's own folder when it is not under a
#   ``projects/`` folder.


def resolve_path(value: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """``value`` with ``~`` expanded, made absolute against ``base`` (default: the working
    directory). Nothing is checked: callers say which config key a missing path came from."""
    path = Path(os.path.expanduser(os.fspath(value)))
    if not path.is_absolute():
        path = Path(base if base is not None else os.getcwd()) / path
    return Path(os.path.normpath(path))


def config_root(config_file: str | os.PathLike) -> Path:
    """The folder a pipeline config's relative paths are relative to (see the rule above)."""
    folder = Path(config_file).resolve().parent
    for parent in (folder, *folder.parents):
        if parent.name == "projects":
            return parent.parent
    return folder


def read_json_list(path: str | os.PathLike, what: str, flag: str) -> list[Any]:
    """The JSON list in a user's input file, unvalidated; each error names the flag, the file
    and, for a wrong type, what the list should hold (``what``)."""
    from lavis_ext.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag}: file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{flag}: {path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise InputError(f"{flag}: {path}: expected a JSON list of {what}, got "
                         f"{type(data).__name__}")
    return data
