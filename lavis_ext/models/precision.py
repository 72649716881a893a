"""One dtype table for every precision field, and the policy that follows the target device.

``model.llm_dtype``, ``model.vit_precision`` and ``run.amp_dtype`` read the same names (one
set of aliases), and each field says which dtypes it takes. The automatic choices depend on
the device the model will run on (``model.device``, ``run.device``, ``--device``), never on
whether this machine happens to have a GPU: a CPU run on a CUDA host gets the CPU policy.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from lavis_ext.errors import InputError

AUTO = "auto"
# Canonical name -> dtype, and every accepted spelling -> canonical name.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
ALIASES: dict[str, str] = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
# What each field takes (canonical names; AUTO where the field has an automatic choice).
LLM_DTYPES = (AUTO, "float32", "float16", "bfloat16")
# A frozen image encoder in float32 or "half" (see ``vit_dtype``), as LAVIS's fp32/fp16.
VIT_PRECISIONS = ("float32", "float16")
AMP_DTYPES = ("float16", "bfloat16")
# From this size on, ``auto`` keeps an LLM in bf16 on CPU: in fp32, OPT-6.7B alone needs 27 GB.
CPU_BF16_FROM_PARAMS = 1_000_000_000


def accepted(allowed: Iterable[str]) -> str:
    """``allowed`` with every alias, for error messages: 'auto, float32 (fp32, float), ...'."""
    parts = []
    for name in allowed:
        others = [a for a, c in ALIASES.items() if c == name and a != name]
        parts.append(f"{name} ({', '.join(others)})" if others else name)
    return ", ".join(parts)


def parse_dtype(value: Any, field: str, allowed: Iterable[str] = tuple(DTYPES),
                error: type[ValueError] = InputError) -> str:
    """The canonical name (or ``auto``) of ``value`` for ``field``; ``error`` names the field
    and lists what it accepts. A ``torch.dtype`` is accepted as itself."""
    allowed = tuple(allowed)
    if isinstance(value, torch.dtype):
        name = next((n for n, d in DTYPES.items() if d == value), str(value))
    else:
        text = str(value).strip().lower()
        name = text if text == AUTO else ALIASES.get(text.removeprefix("torch."), text)
    if name not in allowed:
        raise error(f"{field}={value!r}: expected one of {accepted(allowed)}")
    return name


def device_type(device: str | torch.device) -> str:
    """``cpu``, ``cuda``, ... of the target device (``torch.device`` checks the spelling)."""
    return torch.device(device).type


def llm_dtype(value: Any, device: str | torch.device,
              parameters: int | None = None) -> torch.dtype:
    """``model.llm_dtype`` on the target ``device``. An explicit dtype as given, on any
    device. ``auto``: bf16 on a CUDA device that has it (else fp16); on CPU bf16 for LLMs of
    ``CPU_BF16_FROM_PARAMS`` or more, float32 below."""
    name = parse_dtype(AUTO if value is None else value, "model.llm_dtype", LLM_DTYPES)
    if name != AUTO:
        return DTYPES[name]
    if device_type(device) == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if parameters is not None and parameters >= CPU_BF16_FROM_PARAMS:
        return torch.bfloat16
    return torch.float32


def vit_dtype(value: Any, device: str | torch.device,
              llm: torch.dtype | None = None) -> torch.dtype:
    """The dtype of a frozen image encoder for ``model.vit_precision`` on the target device.

    float32 as asked. float16 (LAVIS's ``fp16``) means half precision: fp16 on CUDA, as in
    LAVIS; on other devices, where fp16 kernels are slow or missing, the LLM's half dtype
    (bf16 on CPU: it then runs under the same autocast, and ViT-G takes 2 GB instead of 4),
    or float32 beside a float32 LLM or without one (stage 1).
    """
    name = parse_dtype(value, "model.vit_precision", VIT_PRECISIONS)
    if name == "float32":
        return torch.float32
    if device_type(device) == "cuda":
        return torch.float16
    return llm if llm is not None and llm != torch.float32 else torch.float32


def amp_dtype(value: Any) -> torch.dtype:
    """``run.amp_dtype`` (float16 when unset, as LAVIS always used)."""
    if value is None:
        return torch.float16
    return DTYPES[parse_dtype(value, "run.amp_dtype", AMP_DTYPES)]
