"""Atomic file writes: the one place the package writes a file that others may read.

A crash (or Ctrl-C, or a full disk) during a write leaves either the old file or the new one,
never a truncated one, because the content goes to a temporary file in the same folder that
is then renamed over the target (``os.replace`` is atomic on one filesystem). This module
imports nothing heavy; ``atomic_save_torch`` imports torch only when called.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_save_torch"]


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
