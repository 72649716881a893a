"""The three stages of the Exp-BLIP method as functions over files, and the one step table
(``method_steps``) that both ``expblip demo`` and ``expblip pipeline`` (real data, the paper's
configs) run in order.

Layout under a work folder: ``captions/<dataset>_<split>.json`` (records with captions),
``configs/<model>/stage{1,2}.yaml`` (the run configs actually used), ``runs/<model>/stage{1,2}``
(LAVIS outputs), ``llm_cache.sqlite`` (every LLM answer, so nothing is paid for twice).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import OmegaConf

from lavis_ext.captions.paths import captions_path
from lavis_ext.data.records import load_records, save_records
from lavis_ext.errors import InputError
from lavis_ext.io import atomic_write_text

SPLITS = ("train", "test")


@dataclass
class Source:
    """One prepared dataset: its records folder (train.json, test.json) and images root."""

    name: str
    prepared: Path
    images: Path


@dataclass(frozen=True)
class MethodStep:
    """One step of the method: ``action`` is what runs, on the datasets of ``group``.

    ``kinds``: captions the step writes (synthesize, pseudo, concat) or the model learns
    (train); ``uses``: the trained models it needs; ``llm``: whether it calls the LLM.
    """

    name: str
    action: str  # synthesize | train | pseudo | evaluate | probe
    group: str  # au | emotion | all: the datasets it works on
    model: str | None = None
    kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> kinds
    uses: tuple[str, ...] = ()
    llm: bool = False


def method_steps(baselines: bool = False, probes: bool = False,
                 cot: bool = False) -> list[MethodStep]:
    """The method in order (paper §3): caption synthesis, AU-BLIP and Emot-BLIP, pseudo
    captions for the missing aspect, LLM fusion, Exp-BLIP, evaluation. ``baselines`` adds the
    paper's Mix-BLIP (rule AU captions and emotion captions, each dataset its own) and Cat-BLIP
    (the two concatenated, no LLM; §4.3) to the models trained; ``probes`` ends with the
    representation probes of Tables 3-4 (§4.4) on the trained captioners' checkpoints.
    ``cot`` (not in the paper) adds ExpLLM-style chain-of-thought descriptions by rule, once
    the pseudo captions give every record both AUs and an emotion, and Exp-BLIP fine-tuned on
    them (``cot_blip``: stage 2 again, from Exp-BLIP's stage-2 checkpoint)."""
    steps = [
        MethodStep("synthesize", "synthesize", "all", llm=True,
                   kinds={"au": ("au-rule", "au-llm"), "emotion": ("emotion-rule",)}),
        MethodStep("train-au-blip", "train", "au", "au_blip", {"au": ("au-rule", "au-llm")}),
        MethodStep("train-emot-blip", "train", "emotion", "emot_blip",
                   {"emotion": ("emotion-rule",)}),
        MethodStep("pseudo-au", "pseudo", "emotion", "au_blip", {"emotion": ("au-pseudo",)},
                   uses=("au_blip",)),
        MethodStep("pseudo-emotion", "pseudo", "au", "emot_blip", {"au": ("emotion-pseudo",)},
                   uses=("emot_blip",)),
        MethodStep("fuse", "synthesize", "all", kinds={"all": ("fuse",)}, llm=True),
        # Cat-BLIP's captions: rule-made, seconds of work, written even without the baselines
        # so that the tiny configs of every model run on a demo's output.
        MethodStep("concat", "synthesize", "all", kinds={"all": ("concat",)}),
        MethodStep("train-exp-blip", "train", "all", "exp_blip", {"all": ("fuse",)}),
    ]
    if cot:
        steps.insert(steps.index(next(s for s in steps if s.name == "train-exp-blip")),
                     MethodStep("cot", "synthesize", "all", kinds={"all": ("cot-rule",)}))
        steps.append(MethodStep("train-cot-blip", "train", "all", "cot_blip",
                                {"all": ("cot-rule",)}, uses=("exp_blip",)))
    if baselines:
        steps += [
            MethodStep("train-mix-blip", "train", "all", "mix_blip",
                       {"au": ("au-rule",), "emotion": ("emotion-rule",)}),
            MethodStep("train-cat-blip", "train", "all", "cat_blip", {"all": ("concat",)}),
        ]
    trained = tuple(s.model for s in steps if s.action == "train")
    steps.append(MethodStep("evaluate", "evaluate", "all", uses=trained))  # type: ignore[arg-type]
    if probes:
        steps.append(MethodStep("probe", "probe", "all", uses=trained))  # type: ignore[arg-type]
    return steps


StepAction = Callable[[MethodStep], Any]


def run_method(table: Sequence[MethodStep], actions: Mapping[str, StepAction], *,
               until: str | None = None,
               before: Callable[[MethodStep], None] | None = None) -> dict[str, Any]:
    """Run the step table with one handler per action (synthesize, train, pseudo, evaluate):
    the one interpreter of the method, for the paper pipeline and the demo alike, so that a
    step added to :func:`method_steps` runs in both or fails in both. ``before`` sees each
    step first (the demo prints section headers); ``until`` stops after that step."""
    missing = sorted({step.action for step in table} - set(actions))
    if missing:
        raise TypeError(f"run_method: no handler for the step actions {missing}")
    results: dict[str, Any] = {}
    for step in table:
        if before is not None:
            before(step)
        results[step.name] = actions[step.action](step)
        if until == step.name:
            break
    return results


def synthesize(work: Path, sources: dict[str, Source], kinds: dict[str, list[str]], config: Any,
               concurrency: int = 8, echo: Callable[[str], None] = lambda _: None,
               progress: bool = False, **options: Any) -> dict[str, Any]:
    """Add captions of the given kinds to every split of every dataset (resumable: the
    captions file is the state; LLM answers come from the cache on a rerun). ``options`` go
    to ``synthesize_records`` (e.g. ``au_kinds``: which AU captions ``fuse`` combines)."""
    from lavis_ext.captions.engine import synthesize_records

    done = {}
    for name, kind_list in kinds.items():
        for split in SPLITS:
            out = captions_path(work, name, split)
            source = out if out.exists() else sources[name].prepared / f"{split}.json"
            if not source.exists():
                raise InputError(f"{name}: prepared records not found: {source} (run "
                                 f"`expblip prepare {name} --root ... --out "
                                 f"{sources[name].prepared}`)")
            records = load_records(source)
            for kind in kind_list:
                summary = synthesize_records(
                    records, kind, client_config=config, cache_path=work / "llm_cache.sqlite",
                    concurrency=concurrency, progress=progress,
                    save=lambda recs, out=out: save_records(recs, out), echo=echo, **options)
                done[f"{name}/{split}/{kind}"] = {
                    "added": summary.added, "failed": summary.failed,
                    "calls": summary.stats.calls, "cache_hits": summary.stats.cache_hits,
                    "cost_usd": summary.stats.cost_usd}
            save_records(records, out)
    return done


def write_run_config(work: Path, template: str | Path, model: str, stage: int,
                     sources: list[Source], overrides: dict[str, Any] | None = None) -> Path:
    """A project YAML with this work folder's data and output paths (plus overrides)."""
    cfg = OmegaConf.load(str(template))
    mix = cfg.datasets.facial_caption_mix
    mix.build_info.sources = [
        {"annotations": {split: {"storage": str(captions_path(work, s.name, split))}
                         for split in SPLITS
                         if split == "train" or captions_path(work, s.name, split).exists()},
         "images": str(s.images)} for s in sources]
    run_dir = work / "runs" / model
    cfg.run.output_dir = str(run_dir / f"stage{stage}")
    if stage == 2:
        cfg.model.pretrained = str(run_dir / "stage1")
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    path = work / "configs" / model / f"stage{stage}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


def train_model(work: Path, model: str, templates: dict[int, str | Path], sources: list[Source],
                overrides: dict[int, dict[str, Any]] | None = None, nproc: int = 1) -> str:
    """The stages of ``templates`` in order, stage 1 then stage 2 (each resumed if it crashed);
    returns the newest checkpoint of the last. A stage 2 without a stage 1 starts from the
    ``model.pretrained`` its overrides name (a warm start)."""
    from lavis_ext.models.checkpoint import newest_checkpoint
    from lavis_ext.method.steps import train_stage

    out = ""
    for stage in sorted(templates):
        cfg = write_run_config(work, templates[stage], model, stage, sources,
                               (overrides or {}).get(stage))
        out = train_stage(cfg, nproc=nproc)
    checkpoint = newest_checkpoint(out)
    if checkpoint is None:
        raise RuntimeError(f"{model}: training wrote no checkpoint under {out}")
    return checkpoint


def pseudo_caption(work: Path, checkpoint: str, source: Source, kind: str,
                   generation: dict[str, Any] | None = None, batch_size: int = 32,
                   device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Caption every split of ``source`` with a trained model, as captions of ``kind``."""
    from lavis_ext.describe.captioner import load_captioner
    from lavis_ext.method.pseudo_caption import pseudo_caption_records

    captioner = load_captioner(checkpoint, device)
    captioner.generation.update(generation or {})
    result = {}
    for split in SPLITS:
        path = captions_path(work, source.name, split)
        if not path.exists():
            raise InputError(f"{source.name}: captions not found: {path} (the synthesize "
                             "step writes them)")
        result[split] = pseudo_caption_records(load_records(path), captioner, str(source.images),
                                               kind, out=path, batch_size=batch_size,
                                               progress=progress)
    return result


def write_corpus(work: Path, name: str, kinds: list[str]) -> str:
    """Caption text of the given kinds from every training split, one per line."""
    lines = []
    for path in sorted((work / "captions").glob("*_train.json")):
        for record in load_records(path):
            for kind in kinds:
                lines += record.get("captions", {}).get(kind, [])
    path = work / "corpus" / f"{name}.txt"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return str(path)
