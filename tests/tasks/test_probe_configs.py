"""Every config in projects/probe: the paper's settings, and one training step of each on tiny
models and synthetic data in the datasets' native layouts (lavis_ext.data.synthetic)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401
from lavis.common.registry import registry
from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.synthetic import make_synthetic
from lavis_ext.entry import train_main
from lavis_ext.facs import AU_SUBSETS

PROBES = Path(__file__).resolve().parents[2] / "projects" / "probe"
CONFIGS = sorted(PROBES.glob("*.yaml"))
EXPECTED = {f"table3_bp4d_{r}.yaml" for r in ("vitg", "qformer_au", "qformer_exp")} | \
    {f"table3_affectnet_{r}.yaml" for r in ("vitg", "qformer_emot", "qformer_exp")} | \
    {f"table4_rafau_{r}.yaml" for r in ("vitg", "qformer_au", "qformer_exp")}
DATASET_OF = {"bp4d_au": "bp4d", "rafau_au": "rafau", "affectnet_emotion": "affectnet"}


def test_the_paper_rows_are_all_there():
    assert {p.name for p in CONFIGS} == EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_settings(path):
    cfg = OmegaConf.load(path)
    probe, (name,) = cfg.run.probe, list(cfg.datasets)
    assert cfg.run.task == "probe" and probe.mode == "linear"
    assert registry.get_builder_class(name) is not None
    assert cfg.run.test_splits == ["test"] and "valid_splits" not in cfg.run
    expected_source = "vision" if path.stem.endswith("vitg") else "qformer"
    assert probe.source == expected_source
    # The Q-Former rows need the captioner's checkpoint; the ViT-G row the released encoder.
    assert cfg.model.load_finetuned is (expected_source == "qformer")
    if name == "bp4d_au":  # the unsampled training set, the held-out subjects
        assert cfg.run.max_epoch == 100 and probe.aus == "bp4d"
        assert "bp4d_probe" in cfg.datasets.bp4d_au.build_info.annotations.train.storage
        assert "--sample-every 1" in path.read_text()
    elif name == "rafau_au":
        assert cfg.run.max_epoch == 400 and probe.aus == "rafau13"
        assert AU_SUBSETS["rafau13"] == (1, 2, 4, 5, 6, 9, 10, 12, 16, 17, 25, 26, 27)
    else:
        assert name == "affectnet_emotion" and probe.target == "emotion"
        assert cfg.run.max_epoch == 100 and len(probe.emotions) == 8
    text = path.read_text()
    assert "expblip prepare" in text and "# Data:" in text  # says what data it needs
    if expected_source == "qformer":  # names the file the captioner's stage 2 writes
        captioner = {"au": "au_blip", "exp": "exp_blip",
                     "emot": "emot_blip"}[path.stem.rsplit("_", 1)[1]]
        stage2 = OmegaConf.load(PROBES.parent / captioner / "stage2.yaml").run
        assert not stage2.valid_splits  # so LAVIS writes checkpoint_<epoch>.pth, no _best
        expected = f"output/{captioner}/stage2/<job id>/checkpoint_{stage2.max_epoch - 1}.pth"
        assert f"model.finetuned={expected}" in text and "/checkpoint_best" not in text


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Small native-layout datasets, prepared as the configs' comments say."""
    root = tmp_path_factory.mktemp("probe_data")
    out = {}
    for dataset, n in (("bp4d", 48), ("rafau", 60), ("affectnet", 64)):
        make_synthetic(dataset, root / dataset, n, seed=0, image_size=112)
        prepare_dataset(dataset, root / dataset, root / f"prepared_{dataset}",
                        sample_every=1 if dataset == "bp4d" else None)
        out[dataset] = (root / dataset, root / f"prepared_{dataset}")
    return out


def run_tiny(path: Path, synthetic, tmp_path: Path, *extra: str) -> Path:
    """Train ``path`` for one epoch on the tiny model type and synthetic data; the job folder."""
    cfg = OmegaConf.load(path)
    (name,) = list(cfg.datasets)
    images, prepared = synthetic[DATASET_OF[name]]
    data = f"datasets.{name}"
    # LAVIS picks the model's default config from the YAML's model_type before it merges
    # --options, so the tiny type goes into a copy of the config (the same arch, without the
    # weight paths of the full-size type); the rest are overrides.
    tiny = cfg.copy()
    tiny.model = {"arch": cfg.model.arch, "model_type": "tiny"}
    copy = tmp_path / path.name
    copy.write_text(OmegaConf.to_yaml(tiny))
    options = [
        "model.load_finetuned=False", "model.load_pretrained=False",
        f"{data}.build_info.annotations.train.storage={prepared / 'train.json'}",
        f"{data}.build_info.annotations.test.storage={prepared / 'test.json'}",
        f"{data}.build_info.images.storage={images}",
        f"{data}.vis_processor.train.image_size=112", f"{data}.vis_processor.eval.image_size=112",
        "run.max_epoch=1", "run.batch_size_train=8", "run.batch_size_eval=16",
        "run.num_workers=0", "run.device=cpu", "run.amp=False",
        f"run.output_dir={tmp_path / 'out'}", f"run.probe.table_dir={tmp_path / 'tables'}",
        f"run.probe.cache_dir={tmp_path / 'cache'}",
    ]
    assert train_main(["--cfg-path", str(copy), "--options", *options, *extra]) == 0
    (job,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    return job


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_one_step_on_tiny_models(path, synthetic, tmp_path, plain_process):
    cfg = OmegaConf.load(path)
    (name,) = list(cfg.datasets)
    job = run_tiny(path, synthetic, tmp_path)
    scores = json.loads((job / "result" / "probe_test_epoch0_scores.json").read_text())
    assert scores["row"] == cfg.run.probe.row_name and scores["n_scored"] > 0
    if cfg.run.probe.target == "au":
        assert scores["classes"] == [str(a) for a in AU_SUBSETS[cfg.run.probe.aus]]
    else:
        assert scores["classes"] == list(cfg.run.probe.emotions)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # train and test features
    target = cfg.run.probe.target
    assert (tmp_path / "tables" / f"probe_{target}_{name}_test.md").is_file()


def test_finetune_mode_trains_the_tiny_qformer_and_image_encoder(synthetic, tmp_path,
                                                                 plain_process):
    """Full fine-tuning (``run.probe.mode=finetune``) of a real Exp-BLIP Q-Former model: its
    no-grad ``probe_features`` is called through ``__wrapped__`` and gradients reach it."""
    job = run_tiny(PROBES / "table4_rafau_qformer_au.yaml", synthetic, tmp_path,
                   "run.probe.mode=finetune", "model.freeze_vit=False")
    saved = torch.load(job / "checkpoint_0.pth", map_location="cpu", weights_only=True)["model"]
    assert "encoder.query_tokens" in saved and "head.weight" in saved
    assert any(k.startswith("encoder.visual_encoder.") for k in saved)
    # The Q-Former's text head never reaches the query features: frozen, so not saved. (Its
    # decoder weights are tied to the word embeddings, which LAVIS saves as if buffers.)
    assert "encoder.Qformer.cls.predictions.transform.dense.weight" not in saved
    assert "encoder.Qformer.bert.encoder.layer.0.intermediate_query.dense.weight" in saved
    scores = json.loads((job / "result" / "probe_test_epoch0_scores.json").read_text())
    assert scores["mode"] == "finetune" and scores["n_scored"] > 0
