"""Process memory of full-size models on CPU (glibc).

glibc raises its mmap threshold to the largest block freed (up to 32 MiB), so the growing
key/value tensors of beam search are carved from the heap, and the freed ones stay mapped:
ViT-G + OPT-6.7B `generate` at batch 8 took RSS from 17.4 to 21.8 GiB and rising on a 24 GB
machine (docs/hardware.md). These helpers are process-wide, so commands call them, not the
models or their loaders: ``expblip describe`` and ``expblip serve`` ask
``heap_mapping_pays`` with the size of the model they loaded, the full-size benchmark maps
unless told not to (``--glibc-heap``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
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


# A model that takes this share of the machine's memory or more gets the mapping: the heap it
# leaves behind (measured: a quarter of ViT-G + OPT-6.7B's weights at batch 8, and rising)
# then decides whether it still fits. Below it, the retained heap fits beside the model
# and the page faults of fresh mappings would only cost time (a small model's batched
# serving reached 1.93x its unbatched throughput with them, measured on 2 cores).
MODEL_SHARE_OF_MEMORY = 0.25


def physical_memory_bytes() -> int | None:
    """The machine's RAM, or None where ``os.sysconf`` cannot tell."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def heap_mapping_pays(model_bytes: int, device: str,
                      memory_bytes: int | None = None) -> bool:
    """Whether a command that runs a model of ``model_bytes`` on ``device`` should call
    ``map_large_allocations``: on CPU, when the model takes ``MODEL_SHARE_OF_MEMORY`` of the
    machine's memory (``memory_bytes``, default: all of its RAM) or more."""
    if not str(device).startswith("cpu"):
        return False
    memory = physical_memory_bytes() if memory_bytes is None else memory_bytes
    return memory is not None and model_bytes >= MODEL_SHARE_OF_MEMORY * memory


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (between phases that each peak on their own)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
