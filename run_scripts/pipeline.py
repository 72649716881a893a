"""The paper's three stages on prepared datasets, driven by one YAML file, resumable.

    python run_scripts/pipeline.py --config projects/pipeline/paper.yaml [--until STEP]

Steps: synthesize (AU captions by rule and LLM, emotion captions by rule) -> train AU-BLIP
and Emot-BLIP (stage 1, stage 2) -> pseudo-caption the missing aspect -> LLM fusion ->
train Exp-BLIP -> evaluate (the facial_captioning task on the test splits). A finished step
is skipped on a rerun; a crashed training run resumes from its newest checkpoint; LLM
answers are cached in <workdir>/llm_cache.sqlite, so a rerun pays for nothing twice.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

import lavis_ext  # noqa: F401
from lavis_ext.captions.client import ClientConfig
from lavis_ext.pipeline.method import Source, pseudo_caption, synthesize, train_model
from lavis_ext.pipeline.steps import Steps, train_stage

STEPS = ("synthesize", "train-au-blip", "train-emot-blip", "pseudo-au", "pseudo-emotion",
         "fuse", "train-exp-blip", "evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--until", choices=STEPS, help="stop after this step")
    args = parser.parse_args()
    cfg = OmegaConf.load(args.config).pipeline
    work = Path(cfg.workdir).resolve()
    steps = Steps(work)
    au = {n: Source(n, Path(s.prepared), Path(s.images)) for n, s in cfg.au_datasets.items()}
    emo = {n: Source(n, Path(s.prepared), Path(s.images))
           for n, s in cfg.emotion_datasets.items()}
    everything = {**au, **emo}
    llm = ClientConfig.from_mapping(OmegaConf.to_container(cfg.llm), f"{args.config}: llm")
    nproc, device = int(cfg.get("nproc_per_node", 1)), cfg.get("device", "cuda")
    pseudo = dict(cfg.get("pseudo_caption", {}))
    batch_size = int(pseudo.pop("batch_size", 32))
    generation = {{"max_len": "max_length", "min_len": "min_length"}.get(k, k): v
                  for k, v in pseudo.items()}

    def templates(model: str) -> dict[int, str]:
        return {1: cfg.models[model].stage1, 2: cfg.models[model].stage2}

    def until(name: str) -> bool:
        return args.until == name

    kinds = {**{n: ["au-rule", "au-llm"] for n in au}, **{n: ["emotion-rule"] for n in emo}}
    steps.run("synthesize", synthesize, work, everything, kinds, llm, cfg.concurrency)
    if until("synthesize"):
        return
    au_blip = steps.run("train-au-blip", train_model, work, "au_blip", templates("au_blip"),
                        list(au.values()), None, nproc)
    if until("train-au-blip"):
        return
    emot_blip = steps.run("train-emot-blip", train_model, work, "emot_blip",
                          templates("emot_blip"), list(emo.values()), None, nproc)
    if until("train-emot-blip"):
        return
    for source in emo.values():
        steps.run(f"pseudo-au-{source.name}", pseudo_caption, work, au_blip, source,
                  "au-pseudo", generation, batch_size, device)
    if until("pseudo-au"):
        return
    for source in au.values():
        steps.run(f"pseudo-emotion-{source.name}", pseudo_caption, work, emot_blip, source,
                  "emotion-pseudo", generation, batch_size, device)
    if until("pseudo-emotion"):
        return
    steps.run("fuse", synthesize, work, everything, {n: ["fuse"] for n in everything}, llm,
              cfg.concurrency)
    if until("fuse"):
        return
    exp_blip = steps.run("train-exp-blip", train_model, work, "exp_blip",
                         templates("exp_blip"), list(everything.values()), None, nproc)
    if until("train-exp-blip"):
        return
    overrides = [f"model.load_finetuned=True", f"model.finetuned={exp_blip}",
                 f"run.output_dir={work / 'runs' / 'exp_blip' / 'evaluate'}"]
    steps.run("evaluate", train_stage, work / "configs" / "exp_blip" / "stage2.yaml", overrides,
              nproc=nproc, action="evaluate")


if __name__ == "__main__":
    main()
