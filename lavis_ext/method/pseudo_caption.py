"""``expblip pseudo-caption``: caption the aspect a dataset lacks with a trained captioner.

Stage 3 of the method gives every image both an AU and an emotion caption: AU-BLIP
describes the AUs of emotion-labelled images, Emot-BLIP the emotion of AU-labelled images.
Output is rewritten atomically every few batches; a rerun skips records already captioned.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from lavis_ext.data.records import Record, add_captions, image_file, load_records, save_records
from lavis_ext.errors import InputError, check_partial
from lavis_ext.flags import add_no_progress, positive_int


def pseudo_caption_records(records: list[Record], captioner: Any, images_root: str,
                           kind: str, *, out: str | os.PathLike, batch_size: int = 16,
                           save_every: int = 10, progress: bool = True) -> dict[str, Any]:
    """Add one ``kind`` caption to every record that lacks one; returns a summary.

    ``captioner``: a ``lavis_ext.describe.captioner.Captioner`` (anything with ``caption``).
    """
    from PIL import Image
    from tqdm import tqdm

    todo = [r for r in records if not r.get("captions", {}).get(kind)]
    summary = {"records": len(records), "already_done": len(records) - len(todo),
               "captioned": 0, "unreadable": 0}
    bar = tqdm(total=len(todo), desc=f"pseudo-caption ({kind})", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch, images = [], []
        for record in todo[start:start + batch_size]:
            path = image_file(record, images_root)  # the aligned crop when there is one
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
                batch.append(record)
            except (OSError, ValueError) as err:
                summary["unreadable"] += 1
                record.setdefault("failures", {})[kind] = f"unreadable image {path}: {err}"
                logging.warning("pseudo-caption: cannot read %s (%s); skipped", path, err)
        for record, text in zip(batch, captioner.caption(images)):
            add_captions(record, kind, [text])
            summary["captioned"] += 1
        bar.update(len(todo[start:start + batch_size]))
        if (start // batch_size + 1) % save_every == 0:
            save_records(records, out)
    bar.close()
    save_records(records, out)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="training checkpoint (.pth) or ARCH[:MODEL_TYPE]")
    parser.add_argument("--ann", required=True, help="input records JSON")
    parser.add_argument("--images", required=True, help="images root of the records")
    parser.add_argument("--out", required=True, help="output records JSON (resumed if present)")
    parser.add_argument("--kind", default="au-pseudo",
                        help="caption kind to add (e.g. au-pseudo, emotion-pseudo)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.images):
        raise InputError(f"--images: folder not found: {args.images}")
    source = args.out if os.path.isfile(args.out) else args.ann
    if not os.path.isfile(source):
        raise InputError(f"--ann: records file not found: {source}")
    records = load_records(source)
    if source == args.out:
        print(f"resuming from {args.out}")
    from lavis_ext.describe.captioner import load_captioner

    captioner = load_captioner(args.model, args.device)
    summary = pseudo_caption_records(records, captioner, args.images, args.kind, out=args.out,
                                     batch_size=args.batch_size,
                                     progress=not args.no_progress)
    print("pseudo-caption summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return check_partial("pseudo-caption", summary["captioned"], summary["unreadable"],
                         "images (unreadable; reasons under 'failures' in --out)")
