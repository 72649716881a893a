"""The experiment configs in projects/: every YAML parses into a LAVIS config whose parts are
registered, the paper settings are where docs/models.md says, and each tiny config trains one
step and generates."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401
from lavis.common.registry import registry

PROJECTS = Path(__file__).resolve().parents[1] / "projects"
EXPERIMENTS = ("au_blip", "emot_blip", "exp_blip", "mix_blip", "cat_blip")
CONFIGS = sorted(p for e in EXPERIMENTS for p in (PROJECTS / e).glob("stage*.yaml"))
# Stage 2 with LLMs other than OPT (model.llm_model): the tiny CPU one and two for real users.
LLM_VARIANTS = {"stage2_tiny_qwen2.yaml": "tiny", "stage2_qwen2.5-1.5b.yaml": "Qwen/Qwen2.5-1.5B",
                "stage2_llama3.2-1b.yaml": "meta-llama/Llama-3.2-1B"}
# AU-BLIP's Table 2 row with ViT-G and OPT-2.7B (stage 1 is the ViT-G one: it has no LLM).
AU_BLIP_VITG_OPT27 = "stage2_vitg_opt2.7b.yaml"
# Exp-BLIP stage 2 on ExpLLM-style chain-of-thought text (not a paper run).
EXP_BLIP_COT = "stage2_cot.yaml"
# Exp-BLIP stage 2 with the AU-cue alignment loss of Belharbi et al. (not a paper run).
EXP_BLIP_AU_CUE = "stage2_au_cue.yaml"


def _current_stack() -> bool:
    import transformers
    from packaging.version import Version

    from lavis_ext.models.llm import GENERIC_MIN_TRANSFORMERS

    return Version(transformers.__version__) >= Version(GENERIC_MIN_TRANSFORMERS)


def _model_cfg(cfg):
    cls = registry.get_model_class(cfg.model.arch)
    defaults = OmegaConf.load(cls.default_config_path(cfg.model.model_type)).model
    return cls, OmegaConf.merge(defaults, cfg.model)


def test_every_experiment_has_all_variants():
    assert len(CONFIGS) == len(EXPERIMENTS) * 6 + len(LLM_VARIANTS) + 3
    for experiment in EXPERIMENTS:
        names = {p.name for p in (PROJECTS / experiment).glob("*.yaml")}
        extra = set(LLM_VARIANTS) | {EXP_BLIP_COT, EXP_BLIP_AU_CUE} \
            if experiment == "exp_blip" else set()
        extra |= {AU_BLIP_VITG_OPT27} if experiment == "au_blip" else set()
        assert names == {f"stage{s}{v}.yaml" for s in (1, 2) for v in ("", "_vitb", "_tiny")
                         } | extra


@pytest.mark.parametrize("name", sorted(LLM_VARIANTS))
def test_llm_variants_change_only_the_llm(name):
    """Each LLM variant is its OPT config with the LLM changed (and its own output folder);
    the merged config picks the variant's LLM over the model type's OPT default."""
    from lavis_ext.models.exp_blip import ExpBlip

    variant = OmegaConf.load(PROJECTS / "exp_blip" / name)
    base = OmegaConf.load(PROJECTS / "exp_blip" / ("stage2_tiny.yaml" if "tiny" in name
                                                   else "stage2.yaml"))
    run, base_run = (OmegaConf.to_container(c.run) for c in (variant, base))
    assert run.pop("output_dir") != base_run.pop("output_dir")
    assert run == base_run and variant.datasets == base.datasets
    model, base_model = (OmegaConf.to_container(c.model) for c in (variant, base))
    for key in ("model_type", "llm_model", "opt_model"):
        model.pop(key, None)
        base_model.pop(key, None)
    assert model == base_model
    _, model_cfg = _model_cfg(variant)
    assert ExpBlip._llm_name(model_cfg) == LLM_VARIANTS[name]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parts_are_registered(path):
    cfg = OmegaConf.load(path)
    assert registry.get_model_class(cfg.model.arch) is not None
    assert cfg.model.model_type in registry.get_model_class(
        cfg.model.arch).PRETRAINED_MODEL_CONFIG_DICT
    assert registry.get_task_class(cfg.run.task) is not None
    for name, dataset in cfg.datasets.items():
        assert registry.get_builder_class(name) is not None
        for split in ("train", "eval"):
            assert registry.get_processor_class(dataset.vis_processor[split].name)
            assert registry.get_processor_class(dataset.text_processor[split].name)
    assert registry.get_lr_scheduler_class(cfg.run.lr_sched) is not None
    assert cfg.run.output_dir and cfg.run.evaluate is False


def test_paper_settings():
    stage1 = OmegaConf.load(PROJECTS / "exp_blip" / "stage1.yaml")
    stage2 = OmegaConf.load(PROJECTS / "exp_blip" / "stage2.yaml")
    assert stage1.model.model_type == "vitg" and stage1.run.init_lr == 1e-4
    assert stage1.run.warmup_steps == 2000 and stage1.run.weight_decay == 0.05
    assert stage2.model.model_type == "vitg_opt6.7b" and stage2.model.freeze_vit is False
    assert stage2.model.prompt == "" and stage2.run.num_beams == 5
    assert stage2.run.max_epoch == 20 and stage2.run.init_lr == 1e-5
    assert stage2.run.warmup_steps == 1000
    for experiment in EXPERIMENTS:  # the paper trains the encoder in stage 2: fp32 weights
        for name in ("stage2.yaml", "stage2_vitb.yaml"):
            model = OmegaConf.load(PROJECTS / experiment / name).model
            assert model.freeze_vit is False and model.vit_precision == "fp32", name
    for experiment in EXPERIMENTS:  # ViT-G fine-tuning: layer-wise lr decay 0.95; ViT-B: none
        assert OmegaConf.load(PROJECTS / experiment / "stage2.yaml").run.lr_layer_decay == 0.95
        assert "lr_layer_decay" not in OmegaConf.load(PROJECTS / experiment / "stage2_vitb.yaml").run
    assert stage2.run.batch_size_train * 4 == 32 and stage1.run.batch_size_train * 4 == 28
    for path in (PROJECTS / "exp_blip").glob("stage*.yaml"):
        if path.name != EXP_BLIP_COT:
            assert OmegaConf.load(path).datasets.facial_caption_mix.caption_kinds == ["fuse"]
    assert OmegaConf.load(PROJECTS / "cat_blip" / "stage2.yaml"
                          ).datasets.facial_caption_mix.caption_kinds == ["concat"]


CAPTION_CONFIGS = CONFIGS + sorted((PROJECTS / "eval").glob("*.yaml"))
# Benchmarks whose records carry their reference texts (the readers put them in caption).
BENCHMARK_REFERENCES = ("fea20k", "faba")


@pytest.mark.parametrize("path", CAPTION_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_caption_records_follow_the_one_path_rule(path):
    """Every captioned-records path is <workdir>/captions/<dataset>_<split>.json
    (lavis_ext.captions.paths): the paper pipeline's workdir, or the demo's for tiny configs."""
    from lavis_ext.captions.paths import DEFAULT_WORKDIR, captions_path, parse_captions_path
    from lavis_ext.data.readers import DATASETS

    workdir = "demo_output" if "tiny" in path.name else DEFAULT_WORKDIR
    sources = OmegaConf.load(path).datasets.facial_caption_mix.build_info.sources
    assert sources
    for source in sources:
        for split, annotation in source.annotations.items():
            own = Path(annotation.storage)
            if own.parts[:2] == ("data", "prepared") and own.parent.name in BENCHMARK_REFERENCES:
                # a benchmark's own reference texts come with its prepared records
                assert path.name.startswith("field_") and own.name == f"{split}.json", own
                continue
            found = parse_captions_path(annotation.storage)
            assert found[0] == workdir and found[2] == split, annotation.storage
            assert found[1] in DATASETS and Path(source.images).name == found[1]
            assert Path(annotation.storage) == captions_path(workdir, found[1], split)


def test_paper_pipeline_workdir_is_the_configs_workdir():
    from lavis_ext.captions.paths import DEFAULT_WORKDIR

    assert OmegaConf.load(PROJECTS / "pipeline" / "paper.yaml").pipeline.workdir == DEFAULT_WORKDIR


# The two stage-2 learning-rate schedules of docs/models.md ("Stage-2 learning-rate schedule"):
# the official configs' (every stage2 config's default) and the paper's main text (one
# --options line).
OFFICIAL_SCHEDULE = {"init_lr": 1e-5, "min_lr": 0, "warmup_lr": 1e-8, "warmup_steps": 1000}
PAPER_TEXT_OPTIONS = "run.init_lr=1e-4 run.min_lr=5e-5 run.warmup_lr=1e-6 run.warmup_steps=2000"
PAPER_TEXT_SCHEDULE = {"init_lr": 1e-4, "min_lr": 5e-5, "warmup_lr": 1e-6, "warmup_steps": 2000}
STAGE2_FULL = [p for p in CONFIGS if p.name.startswith("stage2") and "tiny" not in p.name]


@pytest.mark.parametrize("path", STAGE2_FULL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stage2_schedules_resolve_to_the_documented_values(path):
    """Default and override, as LAVIS's Config merges them, and as LAVIS's scheduler then sets
    the lr: warm-up from warmup_lr to the peak in epoch 0, cosine down to min_lr."""
    from lavis.common.config import Config

    from lavis_ext.entry import parse_args

    docs = (PROJECTS.parent / "docs" / "models.md").read_text()
    assert f"--options {PAPER_TEXT_OPTIONS}" in docs
    for options, expected in ((None, OFFICIAL_SCHEDULE),
                              (PAPER_TEXT_OPTIONS.split(), PAPER_TEXT_SCHEDULE)):
        argv = ["--cfg-path", str(path)] + (["--options", *options] if options else [])
        run = Config(parse_args(argv)).run_cfg
        assert {key: run[key] for key in expected} == expected
        assert run.lr_sched == "expblip_linear_warmup_cosine_lr" and run.max_epoch == 20
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([parameter], lr=run.init_lr)
        scheduler = registry.get_lr_scheduler_class(run.lr_sched)(
            optimizer=optimizer, max_epoch=run.max_epoch, min_lr=run.min_lr,
            init_lr=run.init_lr, warmup_steps=run.warmup_steps, warmup_start_lr=run.warmup_lr)
        seen = []
        for epoch, step in ((0, 0), (0, run.warmup_steps), (run.max_epoch, 0)):
            scheduler.step(cur_epoch=epoch, cur_step=step)
            seen.append(optimizer.param_groups[0]["lr"])
        assert seen == pytest.approx([expected["warmup_lr"], expected["init_lr"],
                                      expected["min_lr"]], rel=1e-9, abs=1e-15)
        assert expected["min_lr"] < expected["init_lr"]


@pytest.mark.skipif(not _current_stack(), reason="stage2_tiny_qwen2.yaml's Qwen2 LLM needs "
                    "transformers >= 4.46 (.venv-current); the paper stack's 4.26.1 has no "
                    "Qwen2 class")
def test_tiny_llm_variant_trains_one_step_and_generates():
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    cfg = OmegaConf.load(PROJECTS / "exp_blip" / "stage2_tiny_qwen2.yaml")
    cfg.model.load_pretrained = False
    cls, model_cfg = _model_cfg(cfg)
    model = cls.from_config(model_cfg)
    assert model.opt_model.config.model_type == "qwen2"
    model.train()
    text = ["It is a people who raises cheek."] * 2
    loss = model({"image": images, "text_input": text})["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    captions = model.generate({"image": images}, num_beams=5, max_length=15)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_tiny_configs_train_one_step_and_generate(experiment, tmp_path):
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    text = ["It is a people who raises cheek and pulls lip corner."] * 2
    for stage in (1, 2):
        cfg = OmegaConf.load(PROJECTS / experiment / f"stage{stage}_tiny.yaml")
        cfg.model.load_pretrained = False
        cls, model_cfg = _model_cfg(cfg)
        model = cls.from_config(model_cfg)
        model.train()
        loss = model({"image": images, "text_input": text})["loss"]
        loss.backward()
        assert torch.isfinite(loss)
        if stage == 2:
            model.eval()
            captions = model.generate({"image": images}, num_beams=2, max_length=15)
            assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_au_blip_vitg_opt27_is_the_vitg_run_with_the_smaller_llm():
    """Table 2's AU-BLIP (ViT-G, OPT-2.7B): stage2.yaml with only the LLM and its output changed."""
    variant = OmegaConf.to_container(OmegaConf.load(PROJECTS / "au_blip" / AU_BLIP_VITG_OPT27))
    base = OmegaConf.to_container(OmegaConf.load(PROJECTS / "au_blip" / "stage2.yaml"))
    assert variant["model"].pop("model_type") == "vitg_opt2.7b"
    assert variant["model"].pop("opt_model") == "facebook/opt-2.7b"
    assert variant["run"].pop("output_dir") == "output/au_blip/stage2_vitg_opt2.7b"
    for key in ("model_type", "opt_model"):
        base["model"].pop(key)
    base["run"].pop("output_dir")
    assert variant == base
    cls, model_cfg = _model_cfg(OmegaConf.load(PROJECTS / "au_blip" / AU_BLIP_VITG_OPT27))
    assert model_cfg.vit_model == "eva_clip_g" and model_cfg.pretrained == "output/au_blip/stage1"



def test_cot_variant_is_stage2_with_cot_text():
    """stage2_cot.yaml: stage2.yaml with the CoT kinds, longer text kept as written, longer
    generation and its own output; FaceME (no AU labels, no ExpLLM text) left out."""
    variant = OmegaConf.to_container(OmegaConf.load(PROJECTS / "exp_blip" / EXP_BLIP_COT))
    base = OmegaConf.to_container(OmegaConf.load(PROJECTS / "exp_blip" / "stage2.yaml"))
    assert variant["model"].pop("max_txt_len") == 256 and base["model"].pop("max_txt_len") == 32
    assert variant["model"] == base["model"]
    assert variant["run"].pop("output_dir") == "output/exp_blip/stage2_cot"
    assert variant["run"].pop("max_len") == 320
    assert variant["run"].pop("text_format") == "cot"
    for key in ("output_dir", "max_len"):
        base["run"].pop(key)
    assert variant["run"] == base["run"]
    data, base_data = variant["datasets"]["facial_caption_mix"], \
        base["datasets"]["facial_caption_mix"]
    assert data.pop("caption_kinds") == ["cot", "cot-rule"]
    for split in ("train", "eval"):
        assert data["text_processor"][split] == {"name": "face_caption", "max_words": 200}
    sources = data["build_info"]["sources"]
    assert sources == [s for s in base_data["build_info"]["sources"]
                       if not s["images"].endswith("faceme")]
    assert data["vis_processor"] == base_data["vis_processor"]


def test_au_cue_variant_is_stage2_with_the_cue_loss_switched_on():
    """stage2_au_cue.yaml: stage2.yaml with model.au_cue_loss.weight 9.0, the training
    processor that moves the landmarks, and its own output; nothing else changed."""
    from lavis_ext.models.exp_blip import au_cue_weight

    variant = OmegaConf.to_container(OmegaConf.load(PROJECTS / "exp_blip" / EXP_BLIP_AU_CUE))
    base = OmegaConf.to_container(OmegaConf.load(PROJECTS / "exp_blip" / "stage2.yaml"))
    assert au_cue_weight(variant["model"].pop("au_cue_loss")) == 9.0
    assert "au_cue_loss" not in base["model"]
    assert variant["run"].pop("output_dir") == "output/exp_blip/stage2_au_cue"
    base["run"].pop("output_dir")
    processors = variant["datasets"]["facial_caption_mix"]["vis_processor"]
    assert processors["train"].pop("name") == "face_image_train_au_cue"
    assert base["datasets"]["facial_caption_mix"]["vis_processor"]["train"].pop("name") \
        == "face_image_train"
    assert variant == base
