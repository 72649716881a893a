"""``expblip export-hf``: a trained Exp-BLIP as a transformers ``Blip2ForConditionalGeneration``
folder (docs/export.md)."""
from __future__ import annotations

import argparse

from lavis_ext.errors import UsageError


def _size(text: str) -> int:
    units = {"KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
    value = text.strip().upper()
    for unit, factor in units.items():
        if value.endswith(unit):
            try:
                return int(float(value[:-len(unit)]) * factor)
            except ValueError:
                break
    raise argparse.ArgumentTypeError(f"expected a size such as 5GB or 500MB, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a training checkpoint (.pth with its run config) or a registered "
                             "ARCH:TYPE such as exp_blip:tiny_eva")
    parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="weight dtype in the folder (float16 for ViT-G + OPT-6.7B)")
    parser.add_argument("--max-shard-size", type=_size, default="5GB",
                        help="split the safetensors weights into files of at most this size")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from lavis_ext.export.writer import export_hf

    if args.max_shard_size <= 0:
        raise UsageError("--max-shard-size must be positive")
    folder = export_hf(args.model, args.out, dtype=args.dtype,
                       max_shard_bytes=args.max_shard_size, force=args.force)
    print(f"wrote {folder} (load it with Blip2ForConditionalGeneration.from_pretrained)")
    return 0
