"""Process memory of full-size models on CPU (glibc).

glibc raises its mmap threshold to the largest block freed (up to 32 MiB), so the growing
key/value tensors of beam search are carved from the heap, and the freed ones stay mapped:
ViT-G + OPT-6.7B `generate` at batch 8 took RSS from 17.4 to 21.8 GiB and rising on a 24 GB
machine (docs/hardware.md). These helpers are process-wide, so commands call them, not the
models.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") else None


def map_large_allocations(threshold: int = 1 << 20) -> bool:
    """Give every block of ``threshold`` bytes or more its own mapping, returned to the OS
    when freed (a fixed threshold also stops glibc's dynamic raising). False where glibc's
    ``mallopt`` is not available (nothing changes there)."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (between phases that each peak on their own)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
