"""`expblip synthesize`: add rule or LLM captions of one kind to a records file.

Reads ``--ann``, writes ``--out`` atomically every ``--save-every`` records and on exit or
Ctrl-C. If ``--out`` already holds the same records (an interrupted run), it resumes from
there; with the answer cache, a rerun pays only for calls never answered before.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import yaml

from lavis_ext.captions.client import ClientConfig
from lavis_ext.captions.cost import PriceTable, parse_price
from lavis_ext.captions.prompts import DEFAULT_PROMPT_SET, PROMPT_SETS
from lavis_ext.captions.engine import (CONCAT_AU_KINDS, DEFAULT_AU_KINDS, DEFAULT_EMOTION_KINDS,
                                       KINDS, LLM_KINDS, SynthesisSummary, synthesize_records)
from lavis_ext.data.records import RecordError, load_records, save_records
from lavis_ext.facs import INTENSITY_STYLES
from lavis_ext.errors import EXIT_INTERRUPTED, InputError, UsageError, check_partial
from lavis_ext.flags import add_base_url, add_concurrency, add_no_progress

log = logging.getLogger("lavis_ext.captions")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="au-rule / emotion-rule: templates; au-llm: one-shot LLM AU "
                             "captions; fuse: LLM fusion of an AU and an emotion caption; "
                             "concat: the two joined without an LLM (Cat-BLIP); cot-rule / "
                             "cot-llm: ExpLLM's three-part reasoning from AUs (and "
                             "au_intensity levels) to the emotion, by rule / by an LLM")
    parser.add_argument("--ann", required=True, type=Path, help="input records JSON")
    parser.add_argument("--out", required=True, type=Path,
                        help="output records JSON (may equal --ann)")
    llm = parser.add_argument_group("LLM (au-llm, fuse, cot-llm)")
    llm.add_argument("--config", type=Path,
                     help="YAML with LLM client options (model, base_url, timeout, ...); "
                          "flags below override it")
    llm.add_argument("--llm-model", help="model name (default gpt-4o-mini)")
    add_base_url(llm)
    llm.add_argument("--api-key-env", help="environment variable holding the API key "
                                           "(default OPENAI_API_KEY)")
    add_concurrency(llm)
    llm.add_argument("--cache", type=Path,
                     help="SQLite answer cache (default: llm_cache.sqlite next to --out)")
    llm.add_argument("--dry-run", action="store_true",
                     help="print the calls, tokens and estimated cost; call and write nothing")
    llm.add_argument("--batch", action="store_true",
                     help="send uncached requests through the OpenAI Batch API (half price, "
                          "up to 24 h)")
    llm.add_argument("--batch-poll", type=float, default=30.0, help="seconds between polls")
    llm.add_argument("--prices", type=Path, help="YAML price table merged over the bundled one")
    llm.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                     help="USD per 1M input,output tokens for a model (repeatable)")
    llm.add_argument("--timeout", type=float, help="seconds per request")
    llm.add_argument("--max-attempts", type=int, help="tries per request on 429/5xx/timeouts")
    llm.add_argument("--answer-attempts", type=int,
                     help="answers tried per caption before a rejection is final")
    llm.add_argument("--backoff-base", type=float, help="first retry back-off, seconds")
    llm.add_argument("--variants", type=int, metavar="K",
                     help="up to K distinct answers per identical prompt (records spread over "
                          "them by image id; each cached on its own); default 1: one answer "
                          "per AU set / caption pair")
    llm.add_argument("--prompt-set", choices=PROMPT_SETS,
                     help=f"bundled LLM prompts (default {DEFAULT_PROMPT_SET}: the paper's "
                          f"design; concise: two or three sentences)")
    llm.add_argument("--prompt-dir", help="folder with edited copies of the prompt YAMLs "
                                          "(au_caption.yaml, fusion.yaml, cot.yaml, "
                                          "rules.yaml)")
    llm.add_argument("--au-prompt", help="your own AU prompt YAML (same keys as "
                                         "lavis_ext/captions/prompts/paper/au_caption.yaml)")
    llm.add_argument("--fusion-prompt", help="your own fusion prompt YAML")
    parser.add_argument("--au-kinds",
                        help="where fuse/concat find AU captions, in order (default: "
                             f"{','.join(DEFAULT_AU_KINDS)} for fuse, "
                             f"{','.join(CONCAT_AU_KINDS)} for concat)")
    parser.add_argument("--emotion-kinds", default=",".join(DEFAULT_EMOTION_KINDS),
                        help="where fuse/concat find emotion captions, in order")
    parser.add_argument("--template", help="rule template, e.g. 'The person {actions}.' for "
                                           "au-rule or 'They look {emotions}.' for emotion-rule")
    parser.add_argument("--intensity", nargs="?", const="adverb", choices=INTENSITY_STYLES,
                        help="au-rule: say each AU's level from au_intensity: adverb "
                             "(the default when given bare; 'slightly raises cheek') or degree "
                             "(FACS A-E words; 'raises cheek with slight intensity'); "
                             "default off")
    parser.add_argument("--save-every", type=int, default=100,
                        help="rewrite --out after this many finished records")
    add_no_progress(parser)
    parser.add_argument("--log", type=Path, help="also write a log (retries, rejections) here")


def client_config(args: argparse.Namespace) -> ClientConfig:
    data = {}
    if args.config:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config file not found: {args.config}")
        try:
            data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{args.config}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise InputError(f"{args.config}: expected a YAML mapping of client options")
    flags = {"model": args.llm_model, "base_url": args.base_url,
             "api_key_env": args.api_key_env, "timeout": args.timeout,
             "max_attempts": args.max_attempts, "answer_attempts": args.answer_attempts,
             "backoff_base": args.backoff_base, "prompt_dir": args.prompt_dir,
             "prompt_set": args.prompt_set, "au_prompt": args.au_prompt,
             "fusion_prompt": args.fusion_prompt, "variants": args.variants}
    data.update({k: v for k, v in flags.items() if v is not None})
    return ClientConfig.from_mapping(data, str(args.config or "command line"))


def _starting_records(ann: Path, out: Path) -> list[dict]:
    records = load_records(ann)
    if out.resolve() != ann.resolve() and out.is_file():
        try:
            previous = load_records(out)
        except RecordError as err:
            print(f"note: ignoring {out} ({err}); starting from {ann}", file=sys.stderr)
            return records
        if [r["image_id"] for r in previous] == [r["image_id"] for r in records]:
            print(f"resuming from {out} (same {len(records)} records as {ann})",
                  file=sys.stderr)
            return previous
        print(f"note: {out} holds other records than {ann}; it will be overwritten",
              file=sys.stderr)
    return records


def _on_sigterm(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)  # same clean exit as Ctrl-C: save, then stop


def run(args: argparse.Namespace) -> int:
    if args.log:
        handler = logging.FileHandler(args.log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        config = client_config(args)
        overrides = dict(parse_price(p) for p in args.price)
        prices = PriceTable.load(args.prices, overrides)
        placeholder = {"au-rule": "{actions}", "emotion-rule": "{emotions}"}.get(args.kind)
        if args.template and (placeholder is None or placeholder not in args.template):
            raise UsageError(f"--template is for au-rule ({{actions}}) and emotion-rule "
                             f"({{emotions}}); {args.template!r} does not fit --kind "
                             f"{args.kind}")
        records = _starting_records(args.ann, args.out)
    except FileNotFoundError as err:
        raise InputError(str(err)) from err
    cache = args.cache or args.out.parent / "llm_cache.sqlite"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary: SynthesisSummary = synthesize_records(
            records, args.kind, client_config=config,
            cache_path=cache if args.kind in LLM_KINDS else None,
            concurrency=args.concurrency, dry_run=args.dry_run, progress=not args.no_progress,
            prices=prices, save=lambda recs: save_records(recs, args.out),
            save_every=args.save_every, au_kinds=tuple(filter(None, (args.au_kinds or "").split(","))) or None,
            emotion_kinds=tuple(filter(None, args.emotion_kinds.split(","))),
            template=args.template, intensity=args.intensity, batch=args.batch,
            batch_poll=args.batch_poll)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary.format())
    if not args.dry_run:
        print(f"wrote {args.out}" + (" (partial)" if summary.interrupted else ""))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return check_partial("synthesize", summary.added + summary.already_done, summary.failed,
                         f"{args.kind} captions (reasons under 'failures' in --out)")
