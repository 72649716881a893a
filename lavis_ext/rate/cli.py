"""``expblip rate``: serve the rating page over a ratings file, or ``--report`` on it.

The first run builds the kit into ``--out`` from ``--pred`` (two or more), ``--ann`` and
``--images`` (``--sample N --seed S`` for a stratified draw); later runs with the same flags,
or with ``--out`` alone, serve the same kit and keep its ratings. Other inputs on an existing
file are refused rather than mixed with its ratings.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from lavis_ext.errors import InputError, UsageError
from lavis_ext.flags import positive_int

if TYPE_CHECKING:
    from lavis_ext.rate.store import RatingStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", action="append", default=[], metavar="[NAME=]FILE",
                        help="one model's predictions (JSON list of {image_id, caption}); "
                             "repeat for each model; NAME defaults to the file's stem")
    parser.add_argument("--ann", action="append", default=[],
                        help="records JSON of the rated split (the test records); repeat for "
                             "several datasets' files (Table 5 rates all of Table 1's)")
    parser.add_argument("--images", action="append", default=[],
                        help="images root of the records: one for every --ann, or one per "
                             "--ann in the same order")
    parser.add_argument("--out", required=True, help="the ratings file (SQLite)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                        help="rate records of this split (default test; 'all' for every one)")
    parser.add_argument("--sample", type=positive_int, metavar="N",
                        help="rate a seeded sample of N items, stratified by dataset "
                             "(the paper rated 505)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--report", action="store_true",
                        help="print the Table 5 report of --out and exit")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--log-level", default="warning", help="server log level",
                        choices=("critical", "error", "warning", "info", "debug"))


def _source(args: argparse.Namespace) -> str:
    """A fingerprint of what the kit is built from."""
    from lavis_ext.rate.kit import paired_sources, parse_pred_flags
    from lavis_ext.rate.store import fingerprint

    parts = []
    for name, path in parse_pred_flags(args.pred):
        if not path.is_file():
            raise InputError(f"--pred: file not found: {path}")
        parts += [name.encode(), path.read_bytes()]
    for ann, images in paired_sources(args.ann, args.images):
        if not ann.is_file():
            raise InputError(f"--ann: file not found: {ann}")
        parts += [ann.read_bytes(), str(images.resolve()).encode()]
    parts += [args.split.encode(), f"{args.sample}:{args.seed}".encode()]
    return fingerprint(parts)


def open_kit(args: argparse.Namespace) -> "RatingStore":
    """The store for ``--out``: built now, or the existing one when its inputs match."""
    from lavis_ext.rate.kit import (build_items, describe_build, paired_sources,
                                    parse_pred_flags, sample_items)
    from lavis_ext.rate.store import RatingStore

    store = RatingStore(args.out)
    given = [flag for flag in ("pred", "ann", "images") if getattr(args, flag)]
    if store.exists():
        if given:
            if len(given) < 3:
                raise UsageError("--pred, --ann and --images go together")
            if _source(args) != store.meta("source"):
                raise UsageError(f"--out {args.out} holds a kit built from other --pred/--ann/"
                                 "--images/--split/--sample/--seed; give those again, only "
                                 "--out, or a new --out")
        counts = store.counts()
        print(f"expblip rate: {args.out}: {counts['items']} items, {counts['models']} models, "
              f"{counts['ratings']} ratings by {counts['raters']} raters so far", flush=True)
        return store
    if len(given) < 3:
        raise UsageError(f"--out {args.out} is new: give --pred (two or more), --ann and "
                         "--images to build the kit")
    source = _source(args)
    preds = parse_pred_flags(args.pred)
    build = build_items(preds, paired_sources(args.ann, args.images),
                        split=None if args.split == "all" else args.split)
    items = build.items
    if args.sample is not None:
        items = sample_items(items, args.sample, args.seed)
    print(f"expblip rate: {describe_build(build)}", flush=True)
    if args.sample is not None:
        print(f"expblip rate: sampled {len(items)} items (seed {args.seed}, stratified by "
              "dataset)", flush=True)
    store.create(items, build.models, source)
    return store


def check(args: argparse.Namespace) -> None:
    """Flag checks before anything is read or bound."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0-65535")


def run(args: argparse.Namespace) -> int:
    from lavis_ext.rate.store import RatingStore

    check(args)
    if args.report:
        store = RatingStore(args.out)
        if not store.exists():
            raise InputError(f"--out {args.out}: no ratings file there")
        from lavis_ext.rate.report import format_report, report

        print(format_report(report(store)))
        return 0
    store = open_kit(args)
    import uvicorn

    from lavis_ext.rate.app import create_app

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"expblip rate: warning: binding {args.host}: anyone who can reach it can rate "
              "under any name", file=sys.stderr)
    print(f"expblip rate: serving on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(store), host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.log_level in ("info", "debug"))
    return 0
