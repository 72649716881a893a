"""``expblip demo``: the whole Exp-BLIP method on synthetic faces, on CPU, in minutes.

1. Draw labelled faces in two native layouts (EmotioNet: AUs; AffectNet: emotions) and
   read them back with the dataset readers.
2. Synthesize captions: AU captions by rule and by LLM, emotion captions by rule.
3. Train AU-BLIP and Emot-BLIP (stage 1, then stage 2) with the stock LAVIS runner.
4. Pseudo-caption the aspect each image lacks, fuse AU and emotion captions with the LLM.
5. Train Exp-BLIP on the fused descriptions, then evaluate AU-BLIP, Emot-BLIP and Exp-BLIP on
   held-out faces: METEOR, ROUGE-L and the AUs/emotions read back from the captions, beside
   the same captions scored against the labels of other (shuffled) images.

LLM steps call a real endpoint when ``OPENAI_BASE_URL`` (or ``--base-url``) is set; otherwise
a local stand-in server composes answers from templates, and the demo says so. Every step is
skipped when it finished in an earlier run of the same ``--workdir``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any


import lavis_ext
from lavis_ext import facs
from lavis_ext.data.records import atomic_write_text, load_records
from lavis_ext.pipeline.method import (Source, pseudo_caption, synthesize, train_model,
                                       write_corpus)

PROJECTS = Path(lavis_ext.__file__).resolve().parent.parent / "projects"
AU_DATASET, EMOTION_DATASET = "emotionet", "affectnet"
PROFILES: dict[str, dict[str, Any]] = {
    # images per dataset; training iterations (stage 1; stage 2 per model); LM pre-training
    "full": dict(n_au=2500, n_emotion=2000, iters1=10, au_iters=1000, emot_iters=500,
                 exp_iters=1300, lm_steps=300, batch=32),
    "quick": dict(n_au=48, n_emotion=40, iters1=2, au_iters=4, emot_iters=4, exp_iters=4,
                  lm_steps=20, batch=8),
}


def _print_header(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


# Faces are drawn at a typical crop size; the models read them at ``--image-size``.
DRAW_SIZE = 112


def make_data(work: Path, profile: dict[str, Any], seed: int,
              size: int = DRAW_SIZE) -> dict[str, Any]:
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.synthetic.writers import make_synthetic

    reports = {}
    for name, n in ((AU_DATASET, profile["n_au"]), (EMOTION_DATASET, profile["n_emotion"])):
        make_synthetic(name, work / "data" / name, n, seed=seed, image_size=size, variant="csv")
        report = prepare_dataset(name, work / "data" / name, work / "prepared" / name, seed=seed)
        reports[name] = {k: report.get(k) for k in ("rows_read", "kept", "skipped")}
    return reports


def _llm_config(args: argparse.Namespace, base_url: str | None) -> Any:
    from lavis_ext.captions.client import ClientConfig

    return ClientConfig(model=args.llm_model, base_url=base_url, backoff_base=0.2)


def sources(work: Path) -> dict[str, Source]:
    return {name: Source(name, work / "prepared" / name, work / "data" / name)
            for name in (AU_DATASET, EMOTION_DATASET)}


def train(work: Path, experiment: str, datasets: list[str], kinds: list[str],
          profile: dict[str, Any], iters2: int, size: int) -> str:
    """Stage 1, then stage 2, each for a fixed number of iterations (LAVIS's iteration
    runner), with the tiny configs; a fixed budget keeps the demo's run time predictable."""
    common = {"model.image_size": size, "run.batch_size_train": profile["batch"],
              "run.batch_size_eval": profile["batch"], "run.test_splits": [],
              "run.runner": "runner_iter",
              **{f"datasets.facial_caption_mix.vis_processor.{split}.image_size": size
                 for split in ("train", "eval")}}
    # Stage 1's ITG head spans BERT's 30k-word vocabulary and dominates its CPU time: here
    # it is a short warm start of the Q-Former.
    stage1 = {**common, "run.max_iters": profile["iters1"],
              "run.iters_per_inner_epoch": profile["iters1"]}
    # The tiny LM stands in for an LLM that already speaks the captions' language: it is
    # pre-trained on exactly the caption kinds this model learns to write (an LM that mixes
    # several caption styles is measured to leave the tiny captioner blind to the image).
    common["datasets.facial_caption_mix.caption_kinds"] = kinds
    corpus = write_corpus(work, experiment, kinds)
    stage2 = {**common, "run.max_iters": iters2,
              "run.iters_per_inner_epoch": max(1, iters2 // 4),
              "model.tiny_lm": {"corpus": corpus, "pretrain_steps": profile["lm_steps"]}}
    templates = {stage: PROJECTS / experiment / f"stage{stage}_tiny.yaml" for stage in (1, 2)}
    all_sources = sources(work)
    return train_model(work, experiment, templates, [all_sources[d] for d in datasets],
                       {1: stage1, 2: stage2})


def evaluate(work: Path, checkpoints: dict[str, tuple[str, list[str]]], seed: int
             ) -> dict[str, Any]:
    """Caption each model's held-out faces (name -> checkpoint, datasets); score against
    references and labels, and against shuffled labels."""
    with ExitStack() as stack:  # one METEOR (Java) process for every evaluation
        return _evaluate(work, checkpoints, seed, stack)


def _evaluate(work: Path, checkpoints: dict[str, tuple[str, list[str]]], seed: int,
              stack: ExitStack) -> dict[str, Any]:
    from lavis_ext.metrics.captioning import MeteorScorer
    from lavis_ext.metrics.evaluate import evaluate_captions, format_table
    from lavis_ext.metrics.recognition import recognition_scores
    from lavis_ext.pipeline.captioner import load_captioner
    from PIL import Image

    au_subset = facs.AU_SUBSETS[AU_DATASET]
    tests = {d: load_records(work / "captions" / f"{d}_test.json")
             for d in (AU_DATASET, EMOTION_DATASET)}
    results: dict[str, Any] = {}
    meteor = stack.enter_context(MeteorScorer())
    for model_name, (checkpoint, datasets) in checkpoints.items():
        captioner = load_captioner(checkpoint)
        for dataset in datasets:
            records = tests[dataset]
            images = [Image.open(work / "data" / dataset / r["image"]) for r in records]
            captions = []
            for start in range(0, len(images), 32):
                captions += captioner.caption(images[start:start + 32])
            predictions = [{"image_id": r["image_id"], "caption": c}
                           for r, c in zip(records, captions)]
            scored = evaluate_captions(predictions, records, meteor=meteor, au_subset=au_subset)
            shuffled = records[:]
            random.Random(seed).shuffle(shuffled)
            control = recognition_scores(captions, shuffled, au_subset)
            scored["shuffled"] = {"au_f1_macro": control["au_f1_macro"],
                                  "emotion_accuracy": control["emotion_accuracy"]}
            results[f"{model_name} on {dataset} test"] = scored
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    table = format_table({k: v for k, v in results.items()})
    (work / "results.md").write_text(table + "\n")
    return {"table": table, "summary": {
        name: {"meteor": r["metrics"].get("meteor"), "rouge_l": r["metrics"].get("rouge_l"),
               "au_f1": r["metrics"]["au_f1_macro"],
               "au_f1_shuffled": r["shuffled"]["au_f1_macro"],
               "emotion_accuracy": r["metrics"]["emotion_accuracy"],
               "emotion_accuracy_shuffled": r["shuffled"]["emotion_accuracy"]}
        for name, r in results.items()}}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def show_results(work: Path, evaluation: dict[str, Any], samples: int = 4) -> None:
    _print_header("Results on held-out synthetic faces")
    print(evaluation["table"])
    print("\nLearning check (AU F1 / emotion accuracy read back from the captions):")
    for name, s in evaluation["summary"].items():
        print(f"  {name:<34} AU F1 {_fmt(s['au_f1'])}  vs shuffled {_fmt(s['au_f1_shuffled'])}"
              f"   emotion acc {_fmt(s['emotion_accuracy'])}  vs shuffled "
              f"{_fmt(s['emotion_accuracy_shuffled'])}")
    results = json.loads((work / "results.json").read_text())
    _print_header("Sample descriptions (Exp-BLIP) beside each image's labels")
    for dataset in (AU_DATASET, EMOTION_DATASET):
        key = f"Exp-BLIP on {dataset} test"
        records = {r["image_id"]: r for r in load_records(work / "captions" /
                                                          f"{dataset}_test.json")}
        for sample in results[key]["per_sample"][:samples]:
            record = records[sample["image_id"]]
            aus = [int(a) for a, v in record["aus"].items() if v == 1]
            print(f"- {dataset}/{record['image']}\n  labels : AUs {sorted(aus) or '-'}, "
                  f"emotions {record['emotions'] or '-'}\n  caption: {sample['caption']}\n"
                  f"  read   : AUs {sample['aus_mentioned'] or '-'}, emotions "
                  f"{sample['emotions_mentioned'] or '-'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo_output", help="all outputs (resumable)")
    parser.add_argument("--quick", action="store_true",
                        help="a few images and one epoch per stage (a smoke test, no learning)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64,
                        help="model input size (faces are drawn at 112 pixels)")
    parser.add_argument("--base-url", default=None,
                        help="OpenAI-compatible endpoint for the LLM steps (default: "
                             "$OPENAI_BASE_URL, else a local stand-in server)")
    parser.add_argument("--llm-model", default="gpt-4o-mini")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fresh", action="store_true", help="delete --workdir first")


def run(args: argparse.Namespace) -> int:
    import shutil

    from lavis_ext.captions.local_server import LocalLLMServer
    from lavis_ext.pipeline.steps import Steps

    started = time.monotonic()
    work = Path(args.workdir).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    profile_name = "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    size = args.image_size
    # Finished steps are skipped on a rerun, so a workdir must not mix settings (a --quick
    # run's models would otherwise be shown as the full demo's).
    settings = {"profile": profile_name, **profile, "image_size": size, "seed": args.seed,
                "draw_size": DRAW_SIZE, "llm_model": args.llm_model}
    recorded = work / "demo_settings.json"
    if recorded.exists() and json.loads(recorded.read_text()) != settings:
        print(f"error: {work} holds a demo run with other settings ({recorded}); "
              "rerun with --fresh to start over, or choose another --workdir", file=sys.stderr)
        return 2
    atomic_write_text(recorded, json.dumps(settings, indent=1))
    steps = Steps(work)
    with ExitStack() as stack:
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if base_url:
            print(f"LLM steps: {args.llm_model} at {base_url}")
        else:
            server = stack.enter_context(LocalLLMServer())
            base_url = server.base_url
            print("LLM steps: NO LLM IS CONFIGURED, so a local STAND-IN server answers "
                  f"({base_url}). It composes captions from templates; it is not a language "
                  "model. Set OPENAI_BASE_URL (and OPENAI_API_KEY) to use a real one.")
        config = _llm_config(args, base_url)

        _print_header("1. Synthetic faces in native layouts, read back by the readers")
        print(json.dumps(steps.run("data", make_data, work, profile, args.seed)))
        _print_header("2. Caption synthesis (AU: rule + LLM; emotion: rule)")
        steps.run("synthesize", synthesize, work, sources(work),
                  {AU_DATASET: ["au-rule", "au-llm"], EMOTION_DATASET: ["emotion-rule"]},
                  config, args.concurrency)
        _print_header("3. Train AU-BLIP and Emot-BLIP (stage 1 + stage 2)")
        au_blip = steps.run("train-au-blip", train, work, "au_blip", [AU_DATASET], ["au-rule"],
                            profile, profile["au_iters"], size)
        emot_blip = steps.run("train-emot-blip", train, work, "emot_blip", [EMOTION_DATASET],
                              ["emotion-rule"], profile, profile["emot_iters"], size)
        _print_header("4. Pseudo-captions for the missing aspect, then LLM fusion")
        greedy = {"num_beams": 1}
        steps.run("pseudo-au", pseudo_caption, work, au_blip, sources(work)[EMOTION_DATASET],
                  "au-pseudo", greedy)
        steps.run("pseudo-emotion", pseudo_caption, work, emot_blip,
                  sources(work)[AU_DATASET], "emotion-pseudo", greedy)
        # Rule-style AU captions (labelled or from AU-BLIP) go into the fusion here: at this
        # scale one caption style is what the tiny models can learn in minutes.
        steps.run("fuse", synthesize, work, sources(work),
                  {AU_DATASET: ["fuse"], EMOTION_DATASET: ["fuse"]}, config, args.concurrency,
                  au_kinds=("au-rule", "au-pseudo"))
        _print_header("5. Train Exp-BLIP on the fused descriptions, and evaluate")
        exp_blip = steps.run("train-exp-blip", train, work, "exp_blip",
                             [AU_DATASET, EMOTION_DATASET], ["fuse"], profile,
                             profile["exp_iters"], size)
        evaluation = steps.run("evaluate", evaluate, work,
                               {"AU-BLIP": (au_blip, [AU_DATASET]),
                                "Emot-BLIP": (emot_blip, [EMOTION_DATASET]),
                                "Exp-BLIP": (exp_blip, [AU_DATASET, EMOTION_DATASET])},
                               args.seed)
    show_results(work, evaluation)
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s; outputs in {work} "
          "(results.md, results.json, configs/, runs/).")
    return 0
