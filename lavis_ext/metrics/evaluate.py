"""Score captions against reference records: `expblip evaluate --pred PRED.json --ann GT.json`.

``evaluate_captions`` is the one scoring routine behind both this command and the
``facial_captioning`` task: caption metrics (best over each image's references, as in the
paper's Table 2) and recognition from text (AU F1, emotion accuracy) side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lavis_ext import facs
from lavis_ext.data.records import RecordError, atomic_write_text, load_records
from lavis_ext.metrics.captioning import MeteorScorer, normalize_caption, score_captions
from lavis_ext.metrics.embeddings import TextEncoder, build_encoder
from lavis_ext.metrics.recognition import parse_caption, recognition_scores

ROUGE_L_DEFINITION = ("ROUGE-L = LCS F-measure with beta 1.2 (pycocoevalcap definition), "
                      "best over an image's references")
CAPTION_METRICS = ("meteor", "rouge_l", "embedding_sim")


class EvaluationError(ValueError):
    """Predictions and references do not fit together."""


def _predictions_by_id(predictions: Sequence[Mapping[str, Any]], where: str) -> dict[str, str]:
    by_id: dict[str, str] = {}
    duplicates = []
    for i, item in enumerate(predictions):
        if not isinstance(item, Mapping) or "image_id" not in item or "caption" not in item:
            raise EvaluationError(f"{where}[{i}]: expected an object with 'image_id' and "
                                  f"'caption', got {item!r:.120}")
        image_id, caption = item["image_id"], item["caption"]
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool):
            raise EvaluationError(f"{where}[{i}]: 'image_id' must be a string, got {image_id!r}")
        if caption is not None and not isinstance(caption, str):
            raise EvaluationError(f"{where}[{i}]: 'caption' must be a string, got {caption!r:.80}")
        key = str(image_id)
        if key in by_id:
            duplicates.append(key)
            continue
        by_id[key] = caption or ""
    if duplicates:
        raise EvaluationError(f"{where}: {len(duplicates)} image ids appear more than once "
                              f"(first: {duplicates[:5]}); give one caption per image")
    return by_id


def evaluate_captions(predictions: Sequence[Mapping[str, Any]],
                      records: Sequence[Mapping[str, Any]], *,
                      encoder: TextEncoder | None = None, meteor: bool | MeteorScorer = True,
                      skip_missing: bool = False, au_subset: Iterable[int] | None = None,
                      where: str = "predictions") -> dict[str, Any]:
    """Score ``[{"image_id", "caption"}]`` against records (``caption`` = references).

    Ids absent from the records raise ``EvaluationError`` unless ``skip_missing`` (then they
    are counted). Records without a non-empty reference are left out of the caption metrics
    (counted) but still count for recognition. ``meteor`` may be an open ``MeteorScorer`` to
    reuse, True to start (and close) one here, or False to skip METEOR.
    """
    by_id = _predictions_by_id(predictions, where)
    record_by_id: dict[str, Mapping[str, Any]] = {}
    for record in records:
        record_by_id.setdefault(str(record["image_id"]), record)
    missing = [i for i in by_id if i not in record_by_id]
    if missing and not skip_missing:
        raise EvaluationError(f"{where}: {len(missing)} of {len(by_id)} image ids are not in the "
                              f"ground truth (first: {missing[:5]}); check the split, or pass "
                              f"skip_missing / --skip-missing to count and skip them")
    matched = [i for i in by_id if i in record_by_id]
    if not matched:
        raise EvaluationError(f"{where}: no prediction matches a ground-truth image id")
    with_refs = [i for i in matched
                 if any(normalize_caption(r) for r in record_by_id[i].get("caption") or [])]
    result: dict[str, Any] = {
        "n_predictions": len(by_id),
        "n_scored": len(matched),
        "n_skipped_missing_in_ground_truth": len(missing),
        "n_without_reference": len(matched) - len(with_refs),
        "n_ground_truth_not_predicted": sum(1 for i in record_by_id if i not in by_id),
        "rouge_l_definition": ROUGE_L_DEFINITION,
        "embedding_encoder": getattr(encoder, "name", None),
    }
    caption_scores: dict[str, Any] = {"per_sample": {}, "mean": {}, "n_empty_predictions": 0}
    if with_refs:
        refs = [list(record_by_id[i]["caption"]) for i in with_refs]
        preds = [by_id[i] for i in with_refs]
        if isinstance(meteor, MeteorScorer):
            caption_scores = score_captions(preds, refs, meteor=meteor, encoder=encoder)
        elif meteor:
            with MeteorScorer() as scorer:
                caption_scores = score_captions(preds, refs, meteor=scorer, encoder=encoder)
        else:
            caption_scores = score_captions(preds, refs, meteor=None, encoder=encoder)
    result["n_empty_predictions"] = sum(1 for i in matched if not normalize_caption(by_id[i]))
    recognition = recognition_scores([by_id[i] for i in matched],
                                     [record_by_id[i] for i in matched], au_subset)
    result["metrics"] = {
        **{name: caption_scores["mean"].get(name) for name in CAPTION_METRICS
           if name in caption_scores["mean"]},
        "au_f1_macro": recognition["au_f1_macro"],
        "emotion_accuracy": recognition["emotion_accuracy"],
    }
    result["recognition"] = recognition
    position = {i: k for k, i in enumerate(with_refs)}
    samples = []
    for i in matched:
        parsed = parse_caption(by_id[i])
        sample: dict[str, Any] = {"image_id": i, "caption": by_id[i],
                                  "aus_mentioned": sorted(parsed.aus),
                                  "emotions_mentioned": sorted(parsed.emotions)}
        if i in position:
            for name, values in caption_scores["per_sample"].items():
                sample[name] = values[position[i]]
        samples.append(sample)
    result["per_sample"] = samples
    return result


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown in the layout of the paper's Table 2, plus recognition-from-text columns."""
    encoder = next((r.get("embedding_encoder") for r in results.values()
                    if r.get("embedding_encoder")), None)
    sim_title = f"Sim(%) [{encoder}]" if encoder else "Sim(%)"
    lines = [f"| model | METEOR | ROUGE-L | {sim_title} | AU F1 (text) | Emotion acc (text) | n |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(f"| {name} | {_fmt(m.get('meteor'))} | {_fmt(m.get('rouge_l'))} | "
                     f"{_fmt(m.get('embedding_sim'), 100, 2)} | "
                     f"{_fmt(m.get('au_f1_macro'), 100, 1)} | "
                     f"{_fmt(m.get('emotion_accuracy'), 100, 1)} | {r['n_scored']} |")
    # Rows without AU labels (emotion-only test sets) would be all dashes: left out.
    per_au = {name: r["recognition"]["au_f1"] for name, r in results.items()
              if r["recognition"]["au_f1"]}
    aus = sorted({int(a) for scores in per_au.values() for a in scores})
    if aus:
        lines += ["", "AU F1 (%) read from the captions:", "",
                  "| model | " + " | ".join(f"AU{a}" for a in aus) + " | avg |",
                  "|---|" + "---|" * (len(aus) + 1)]
        for name, scores in per_au.items():
            cells = [_fmt(scores.get(str(a)), 100, 1) for a in aus]
            avg = results[name]["recognition"]["au_f1_macro"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(avg, 100, 1)} |")
    return "\n".join(lines)


def _au_subset(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    if text.lower() in facs.AU_SUBSETS:
        return facs.AU_SUBSETS[text.lower()]
    try:
        return tuple(facs.au_name(part).number for part in text.split(",") if part.strip())
    except KeyError as err:
        raise SystemExit(f"--au-subset: {err.args[0]}; or use one of {sorted(facs.AU_SUBSETS)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="JSON list of {image_id, caption}")
    parser.add_argument("--ann", required=True, help="records JSON with the reference captions")
    parser.add_argument("--out", help="scores JSON to write (default: PRED with .scores.json)")
    parser.add_argument("--name", help="row label in the table (default: the PRED file name)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="use only records of this split")
    parser.add_argument("--encoder", default="minilm",
                        help="embedding encoder: minilm (offline, default), openai, "
                             "openai:<model>, or none")
    parser.add_argument("--openai-base-url", help="base_url for the OpenAI client")
    parser.add_argument("--embedding-cache",
                        help="JSONL cache for OpenAI embeddings (default: next to --out)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="count and skip predicted ids that the records lack")
    parser.add_argument("--au-subset", help="AUs to score: a facs.AU_SUBSETS name "
                                            "(bp4d, gft, ...) or a comma list")


def run(args: argparse.Namespace) -> int:
    pred_path = Path(args.pred)
    if not pred_path.is_file():
        raise SystemExit(f"--pred: file not found: {pred_path}")
    try:
        predictions = json.loads(pred_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SystemExit(f"{pred_path}: not valid JSON ({err})")
    if not isinstance(predictions, list):
        raise SystemExit(f"{pred_path}: expected a JSON list of {{image_id, caption}}")
    try:
        records = load_records(args.ann)
    except (RecordError, FileNotFoundError) as err:
        print(f"error: --ann: {err}", file=sys.stderr)
        return 2
    if args.split:
        records = [r for r in records if r["split"] == args.split]
    out = Path(args.out) if args.out else pred_path.with_suffix(".scores.json")
    try:
        encoder = _encoder_from_args(args, out)
    except (RuntimeError, ImportError, ValueError) as err:
        print(f"error: --encoder {args.encoder}: {err}", file=sys.stderr)
        return 2
    try:
        result = evaluate_captions(predictions, records, encoder=encoder,
                                   meteor=not args.no_meteor, skip_missing=args.skip_missing,
                                   au_subset=_au_subset(args.au_subset), where=str(pred_path))
    except (EvaluationError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.name or pred_path.stem
    atomic_write_text(out, json.dumps({name: result}, indent=1) + "\n")
    print(format_table({name: result}))
    print(f"\n{result['n_scored']} captions scored; skipped: "
          f"{result['n_skipped_missing_in_ground_truth']} ids not in {args.ann}, "
          f"{result['n_without_reference']} without a reference; "
          f"{result['n_empty_predictions']} empty predictions (scored 0). {ROUGE_L_DEFINITION}.")
    print(f"wrote {out}")
    return 0


def _encoder_from_args(args: argparse.Namespace, out: Path) -> TextEncoder | None:
    encoder = None
    if args.encoder.lower() != "none":
        spec: dict[str, Any] = {"name": args.encoder.partition(":")[0]}
        if args.encoder.partition(":")[2]:
            spec["model"] = args.encoder.partition(":")[2]
        if spec["name"].lower() == "openai":
            spec["base_url"] = args.openai_base_url
            spec["cache_path"] = args.embedding_cache or str(out.with_suffix(".embeddings.jsonl"))
        encoder = build_encoder(spec)
    return encoder
