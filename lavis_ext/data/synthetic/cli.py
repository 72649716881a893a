"""`expblip make-synthetic DATASET --out DIR --n N --seed S`: a small dataset, native layout."""
from __future__ import annotations

import argparse
import time

from lavis_ext.data.synthetic.writers import VARIANTS, WRITERS, make_synthetic
from lavis_ext.flags import add_no_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=tuple(WRITERS), help="which dataset's layout to write")
    parser.add_argument("--out", required=True, help="folder to write the dataset into")
    parser.add_argument("--n", type=int, default=200, help="number of labelled faces")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--image-size", type=int, default=112, help="pixels (e.g. 112, 224)")
    parser.add_argument("--variant", help="; ".join(f"{d}: {'/'.join(v)}"
                                                    for d, v in VARIANTS.items()))
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    manifest = make_synthetic(args.dataset, args.out, args.n, args.seed, args.image_size,
                              variant=args.variant, progress=not args.no_progress)
    print(f"{args.dataset}: wrote {manifest['images']} images and {manifest['rows_read']} label "
          f"rows to {args.out} in {time.perf_counter() - started:.1f} s "
          f"(expected labels: {args.out}/synthetic_manifest.json)")
    return 0
