"""Score captions against reference records: `expblip evaluate --pred PRED.json --ann GT.json`.

``evaluate_captions`` is the one scoring routine behind both this command and the
``facial_captioning`` task: caption metrics (best over each image's references, as in the
paper's Table 2) and recognition from text (AU F1, emotion accuracy) side by side.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lavis_ext import facs
from lavis_ext.data.records import RecordError, load_records
from lavis_ext.errors import InputError, UsageError
from lavis_ext.flags import add_base_url
from lavis_ext.io import atomic_write_text
from lavis_ext.metrics.captioning import (DEFAULT_PROTOCOL, PROTOCOLS, MeteorScorer,
                                          check_protocol,
                                          normalize_caption, score_captions,
                                          score_captions_coco)
from lavis_ext.metrics.embeddings import TextEncoder, build_encoder
from lavis_ext.metrics.predictions import (FORMATS, ID_FIELDS, TEXT_FIELDS,
                                            load_predictions)
from lavis_ext.metrics.recognition import (intensity_scores, parse_caption,
                                            recognition_scores)

ROUGE_L_DEFINITION = "ROUGE-L = LCS F-measure with beta 1.2 (pycocoevalcap definition)"
PROTOCOL_DEFINITIONS = {
    "best": ("the paper's protocol (§4.1): PTB tokenizer; each reference scored on its own "
             "with pycocoevalcap (METEOR 1.5 segment score, ROUGE-L, embedding similarity), "
             "the highest score of each image kept, mean over images"),
    "coco": ("COCO caption evaluation (pycocoevalcap): PTB tokenizer; METEOR 1.5 against all "
             "references at once, corpus-level score; ROUGE-L with the best precision and the "
             "best recall over references, mean over images; embedding similarity: best "
             "reference, mean over images"),
    "facial-r1": ("Facial-R1's protocol (its released evaluation code): ROUGE-L is the "
                  "rouge_score package's rougeL F-measure (beta 1, Porter stemming, its own "
                  "tokenizer) against the best reference, mean over images; METEOR and "
                  "embedding similarity, when asked for, as in 'best'"),
}
# What 'rouge_l' means in a result, by protocol.
ROUGE_L_DEFINITIONS = {"best": ROUGE_L_DEFINITION, "coco": ROUGE_L_DEFINITION,
                       "facial-r1": "ROUGE-L = rouge_score's rougeL F-measure (beta 1, stemmed)"}
CAPTION_METRICS = ("meteor", "rouge_l", "embedding_sim")
REPORT_BY = (None, "dataset", "split")


class EvaluationError(InputError):
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


def reference_captions(record: Mapping[str, Any], ref_kinds: Sequence[str] | None) -> list[str]:
    """The references of a record: its ``caption`` list, or only the captions of the named
    synthesis kinds (``captions[kind]``, in the order given)."""
    if not ref_kinds:
        return list(record.get("caption") or [])
    by_kind = record.get("captions") or {}
    texts: list[str] = []
    for kind in ref_kinds:
        texts.extend(t for t in by_kind.get(kind) or [] if t not in texts)
    return texts


def _group_key(record: Mapping[str, Any], report_by: str | None) -> str | None:
    if report_by is None:
        return None
    value = record.get(report_by)
    return "unknown" if value is None else str(value)


def evaluate_captions(predictions: Sequence[Mapping[str, Any]],
                      records: Sequence[Mapping[str, Any]], *,
                      encoder: TextEncoder | None = None, meteor: bool | MeteorScorer = True,
                      skip_missing: bool = False, au_subset: Iterable[int] | None = None,
                      where: str = "predictions", ref_kinds: Sequence[str] | None = None,
                      report_by: str | None = None, protocol: str = DEFAULT_PROTOCOL
                      ) -> dict[str, Any]:
    """Score ``[{"image_id", "caption"}]`` against records (``caption`` = references).

    Ids absent from the records raise ``EvaluationError`` unless ``skip_missing`` (then they
    are counted). ``ref_kinds`` keeps only the references of those synthesis kinds
    (``captions[kind]``; the paper's Table 2 uses ``au-rule`` and ``au-llm``). Records
    without a non-empty reference are left out of the caption metrics (counted) but still
    count for recognition. ``report_by`` (``"dataset"``) adds one result per value of that
    record field in ``groups``, each scored as if evaluated alone; the top level is the
    pooled result. ``protocol``: ``best`` (the paper's) or ``coco`` (see
    ``metrics.captioning``).
    ``meteor`` may be an open ``MeteorScorer`` to reuse, True to start (and close) one here,
    or False to skip METEOR.
    """
    check_protocol(protocol)
    if report_by not in REPORT_BY:
        raise EvaluationError(f"report_by: expected one of {REPORT_BY}, got {report_by!r}")
    ref_kinds = list(ref_kinds) if ref_kinds else None
    by_id = _predictions_by_id(predictions, where)
    # Other systems' outputs (metrics.predictions) may say AUs and emotions in parts of
    # their text apart from the caption that the caption metrics score.
    parts = {str(p["image_id"]): p for p in predictions}

    def au_text_of(i: str) -> str:
        return parts[i].get("au_text", by_id[i]) or ""

    def emotion_text_of(i: str) -> str:
        return parts[i].get("emotion_text", by_id[i]) or ""

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
    refs_of = {i: [r for r in reference_captions(record_by_id[i], ref_kinds)
                   if normalize_caption(r)] for i in matched}
    with_refs = [i for i in matched if refs_of[i]]
    if ref_kinds and not with_refs:
        found = sorted({k for i in matched for k in (record_by_id[i].get("captions") or {})})
        raise EvaluationError(f"{where}: none of the {len(matched)} scored records has a "
                              f"reference of kinds {ref_kinds} (captions[kind]); kinds found: "
                              f"{found or 'none (no captions provenance)'}")
    group_of = {i: _group_key(record_by_id[i], report_by) for i in matched}
    group_names = sorted({g for g in group_of.values() if g is not None})
    position = {i: k for k, i in enumerate(with_refs)}
    groups = {g: [position[i] for i in with_refs if group_of[i] == g] for g in group_names}
    caption_scores: dict[str, Any] = {"per_sample": {}, "mean": {}, "group_mean": {}}
    if with_refs:
        refs = [refs_of[i] for i in with_refs]
        preds = [by_id[i] for i in with_refs]
        def run(scorer: MeteorScorer | None) -> dict[str, Any]:
            if protocol == "coco":
                return score_captions_coco(preds, refs, meteor=scorer, encoder=encoder,
                                           groups=groups)
            return score_captions(preds, refs, meteor=scorer, encoder=encoder, groups=groups,
                                  rouge="rouge_score" if protocol == "facial-r1" else "coco")

        if isinstance(meteor, MeteorScorer):
            caption_scores = run(meteor)
        elif meteor:
            with MeteorScorer() as scorer:
                caption_scores = run(scorer)
        else:
            caption_scores = run(None)

    def summary(ids: list[str], means: Mapping[str, Any]) -> dict[str, Any]:
        scored = [i for i in ids if i in position]
        recognition = recognition_scores([au_text_of(i) for i in ids],
                                         [record_by_id[i] for i in ids], au_subset,
                                         emotion_captions=[emotion_text_of(i) for i in ids])
        intensity = intensity_scores([au_text_of(i) for i in ids],
                                     [record_by_id[i] for i in ids], au_subset)
        extra = {}
        if intensity is not None:  # only where references carry au_intensity
            recognition["au_intensity"] = intensity
            extra["au_intensity_pcc"] = intensity["pcc_macro"]
        return {
            "n_scored": len(ids),
            "n_without_reference": len(ids) - len(scored),
            "n_empty_predictions": sum(1 for i in ids if not normalize_caption(by_id[i])),
            "metrics": {**{name: means.get(name) for name in CAPTION_METRICS if name in means},
                        "au_f1_macro": recognition["au_f1_macro"],
                        "emotion_accuracy": recognition["emotion_accuracy"], **extra},
            "recognition": recognition,
        }

    pooled = summary(matched, caption_scores["mean"])
    result: dict[str, Any] = {
        "n_predictions": len(by_id),
        "n_scored": pooled["n_scored"],
        "n_skipped_missing_in_ground_truth": len(missing),
        "n_without_reference": pooled["n_without_reference"],
        "n_ground_truth_not_predicted": sum(1 for i in record_by_id if i not in by_id),
        "n_empty_predictions": pooled["n_empty_predictions"],
        "protocol": protocol,
        "protocol_definition": PROTOCOL_DEFINITIONS[protocol],
        "rouge_l_definition": ROUGE_L_DEFINITIONS[protocol],
        "ref_kinds": ref_kinds,
        "report_by": report_by,
        "embedding_encoder": getattr(encoder, "name", None),
        "metrics": pooled["metrics"],
        "recognition": pooled["recognition"],
    }
    if report_by is not None:
        result["groups"] = {g: summary([i for i in matched if group_of[i] == g],
                                       caption_scores["group_mean"].get(g, {}))
                            for g in group_names}
    samples = []
    for i in matched:
        sample: dict[str, Any] = {"image_id": i, "caption": by_id[i],
                                  "aus_mentioned": sorted(parse_caption(au_text_of(i)).aus),
                                  "emotions_mentioned":
                                      sorted(parse_caption(emotion_text_of(i)).emotions)}
        if "au_text" in parts[i]:
            sample["au_text"] = parts[i]["au_text"]
            sample["emotion_text"] = parts[i].get("emotion_text")
        if report_by is not None:
            sample[report_by] = group_of[i]
        if i in position:
            for name, values in caption_scores["per_sample"].items():
                sample[name] = values[position[i]]
        samples.append(sample)
    result["per_sample"] = samples
    return result


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


PAPER_EMBEDDING_MODEL = "text-embedding-ada-002"


def similarity_title(encoder: str | None) -> str:
    """Column title that says which embedding model produced the similarity."""
    if not encoder:
        return "Sim(%)"
    if encoder == PAPER_EMBEDDING_MODEL:
        return f"Ada-sim(%) [{encoder}: the paper's setting]"
    return f"Sim(%) [{encoder}: stand-in, not comparable with the paper's Ada-sim]"


def _rows(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(model, data, result) rows: one per group of a grouped result, then its pooled row."""
    rows = []
    for name, r in results.items():
        for group, part in (r.get("groups") or {}).items():
            rows.append((name, group, part))
        rows.append((name, "all" if r.get("groups") is not None else "", r))
    return rows


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown in the layout of the paper's Table 2, plus recognition-from-text columns;
    results scored with ``report_by`` get one row per dataset and a pooled ``all`` row."""
    encoder = next((r.get("embedding_encoder") for r in results.values()
                    if r.get("embedding_encoder")), None)
    grouped = any(r.get("groups") is not None for r in results.values())
    rows = _rows(results)
    label = (lambda name, data: f"| {name} | {data} |") if grouped else \
        (lambda name, data: f"| {name} |")
    head = "| model | data |" if grouped else "| model |"
    lines = [f"{head} METEOR | ROUGE-L | {similarity_title(encoder)} | AU F1 (text) | "
             f"Emotion acc (text) | n |",
             "|---|" + ("---|" if grouped else "") + "---|---|---|---|---|---|"]
    for name, data, r in rows:
        m = r["metrics"]
        lines.append(f"{label(name, data)} {_fmt(m.get('meteor'))} | {_fmt(m.get('rouge_l'))} | "
                     f"{_fmt(m.get('embedding_sim'), 100, 2)} | "
                     f"{_fmt(m.get('au_f1_macro'), 100, 1)} | "
                     f"{_fmt(m.get('emotion_accuracy'), 100, 1)} | {r['n_scored']} |")

    def per_au(title: str, entries: list[tuple[str, str, Mapping[str, Any]]], values: str,
               macro: str, *scale: float) -> list[str]:
        """One column per AU that any entry scores, then the macro average."""
        aus = sorted({int(a) for _, _, rec in entries for a in rec[values]})
        if not aus:
            return []
        out = ["", title, "", head + " " + " | ".join(f"AU{a}" for a in aus) + " | avg |",
               "|---|" + ("---|" if grouped else "") + "---|" * (len(aus) + 1)]
        for name, data, rec in entries:
            cells = [_fmt(rec[values].get(str(a)), *scale) for a in aus]
            out.append(f"{label(name, data)} " + " | ".join(cells)
                       + f" | {_fmt(rec[macro], *scale)} |")
        return out

    # Rows without AU labels (emotion-only test sets) would be all dashes: left out.
    lines += per_au("AU F1 (%) read from the captions:",
                    [(name, data, r["recognition"]) for name, data, r in rows
                     if r["recognition"]["au_f1"]], "au_f1", "au_f1_macro", 100, 1)
    lines += per_au("AU intensity PCC read from the captions (against au_intensity):",
                    [(name, data, r["recognition"]["au_intensity"]) for name, data, r in rows
                     if r["recognition"].get("au_intensity")], "pcc", "pcc_macro")
    return "\n".join(lines)


def _au_subset(text: str | None) -> tuple[int, ...] | None:
    return facs.parse_au_subset(text, "--au-subset")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True,
                        help="predictions: a JSON list of {image_id, caption}, an object "
                             "{id: text}, or JSONL; other systems' outputs too (--format)")
    parser.add_argument("--format", choices=FORMATS, default="auto", dest="pred_format",
                        help="how to read each prediction's text: caption (as it is), "
                             "facial-r1 (<think>..</think><answer>..</answer>: AUs and emotion "
                             "from the answer), expllm (three bold sections: emotion from the "
                             "last), cot (ExpLLM's three titled parts: AUs from the key "
                             "observations, emotion from the conclusion); auto (default) detects it and says which")
    parser.add_argument("--id-field", help="the id field of --pred items (default: the first "
                                           f"of {', '.join(ID_FIELDS)})")
    parser.add_argument("--text-field", help="the text field of --pred items (default: the "
                                             f"first of {', '.join(TEXT_FIELDS)})")
    parser.add_argument("--ann", required=True, help="records JSON with the reference captions")
    parser.add_argument("--out", help="scores JSON to write (default: PRED with .scores.json)")
    parser.add_argument("--name", help="row label in the table (default: the PRED file name)")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="use only records of this split")
    parser.add_argument("--encoder", default="minilm",
                        help="embedding encoder: minilm (offline, default), openai, "
                             "openai:<model>, or none")
    add_base_url(parser, "the openai encoder", "$OPENAI_BASE_URL, else OpenAI")
    parser.add_argument("--embedding-cache",
                        help="JSONL cache for OpenAI embeddings (default: next to --out)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="count and skip predicted ids that the records lack")
    parser.add_argument("--au-subset", help="AUs to score: a facs.AU_SUBSETS name "
                                            "(bp4d, gft, ...) or a comma list")
    parser.add_argument("--ref-kinds", metavar="KIND[,KIND]",
                        help="score only against captions of these synthesis kinds "
                             "(captions[kind]), e.g. au-rule,au-llm for the paper's Table 2; "
                             "default: every caption of a record")
    parser.add_argument("--by", choices=[b for b in REPORT_BY if b], dest="report_by",
                        help="one row per value of this record field, plus the pooled row")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                        help="best (default; the paper's Table 2): each reference scored "
                             "alone with pycocoevalcap, the highest kept per image; coco: "
                             "COCO's multi-reference pipeline (corpus METEOR, ROUGE-L with "
                             "precision and recall maxima apart). Both need Java")


def run(args: argparse.Namespace) -> int:
    pred_path = Path(args.pred)
    if not pred_path.is_file():
        raise InputError(f"--pred: file not found: {pred_path}")
    predictions, read = load_predictions(pred_path, args.pred_format, id_field=args.id_field,
                                         text_field=args.text_field)
    try:
        records = load_records(args.ann)
    except (RecordError, FileNotFoundError) as err:
        raise InputError(f"--ann: {err}") from err
    if args.split:
        records = [r for r in records if r["split"] == args.split]
    out = Path(args.out) if args.out else pred_path.with_suffix(".scores.json")
    try:
        encoder = _encoder_from_args(args, out)
    except (RuntimeError, ImportError, InputError) as err:  # InputError: UsageError too
        raise UsageError(f"--encoder {args.encoder}: {err}") from err
    try:
        result = evaluate_captions(predictions, records, encoder=encoder,
                                   meteor=not args.no_meteor, skip_missing=args.skip_missing,
                                   au_subset=_au_subset(args.au_subset), where=str(pred_path),
                                   ref_kinds=_ref_kinds(args.ref_kinds),
                                   report_by=args.report_by, protocol=args.protocol)
    except (EvaluationError, RuntimeError) as err:
        raise InputError(str(err)) from err
    result["prediction_format"] = {k: read[k] for k in
                                   ("format", "format_reason", "n_items", "n_incomplete",
                                    "incomplete_examples", "incomplete_means")}
    name = args.name or pred_path.stem
    atomic_write_text(out, json.dumps({name: result}, indent=1) + "\n")
    print(f"--pred {pred_path}: {read['n_items']} predictions read as {read['format']} "
          f"({read['format_reason']})")
    if read["n_incomplete"]:
        print(f"  {read['n_incomplete']} of them with {read['incomplete_means']} (e.g. "
              f"{read['incomplete_examples']})")
    print(format_table({name: result}))
    print(f"\n{result['n_scored']} captions scored; skipped: "
          f"{result['n_skipped_missing_in_ground_truth']} ids not in {args.ann}, "
          f"{result['n_without_reference']} without a reference; "
          f"{result['n_empty_predictions']} empty predictions (scored 0).\n"
          f"References: {', '.join(result['ref_kinds'] or ['every caption'])}. Protocol "
          f"{result['protocol']}: {result['protocol_definition']}.")
    print(f"wrote {out}")
    return 0


def _ref_kinds(text: str | None) -> list[str] | None:
    kinds = [k.strip() for k in (text or "").split(",") if k.strip()]
    if text is not None and not kinds:
        raise UsageError("--ref-kinds: give one or more caption kinds, e.g. au-rule,au-llm")
    return kinds or None


def _encoder_from_args(args: argparse.Namespace, out: Path) -> TextEncoder | None:
    encoder = None
    if args.encoder.lower() != "none":
        spec: dict[str, Any] = {"name": args.encoder.partition(":")[0]}
        if args.encoder.partition(":")[2]:
            spec["model"] = args.encoder.partition(":")[2]
        if spec["name"].lower() == "openai":
            spec["base_url"] = args.base_url
            spec["cache_path"] = args.embedding_cache or str(out.with_suffix(".embeddings.jsonl"))
        encoder = build_encoder(spec)
    return encoder
