"""The Q-Former probes (Tables 3-4) load what the captioners' runs save.

A tiny AU-BLIP stage 2 is trained for one epoch by the plugin's runner (``train.py``), and its
``checkpoint_0.pth`` (what LAVIS writes with ``valid_splits: []``: one file per epoch, no
``checkpoint_best.pth``) goes into ``exp_blip_qformer`` as the probe configs load it.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers the models)
from lavis.common.registry import registry
from lavis_ext.entry import train_main
from lavis_ext.models.checkpoint import (CheckpointKindError, IncompleteCheckpointError,
                                         load_weights_file)
from lavis_ext.models.exp_blip import ExpBlipQformer, qformer_text_branch
from test_probe_configs import PROBES, run_tiny, synthetic  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def captioner_checkpoint(tmp_path_factory) -> Path:
    """``checkpoint_0.pth`` of a tiny AU-BLIP stage 2 trained one epoch by the runner on
    synthetic EmotioNet faces with rule AU captions (as tests/test_train_tiny.py builds them)."""
    from lavis_ext.captions.engine import synthesize_records
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.records import load_records, save_records
    from lavis_ext.data.synthetic.writers import make_synthetic
    from lavis_ext.method.recipe import Source, write_run_config

    work = tmp_path_factory.mktemp("captioner")
    make_synthetic("emotionet", work / "data" / "emotionet", 16, seed=3, variant="csv")
    prepare_dataset("emotionet", work / "data" / "emotionet", work / "prepared" / "emotionet")
    records = load_records(work / "prepared" / "emotionet" / "train.json")
    synthesize_records(records, "au-rule", progress=False, echo=lambda _: None)
    save_records(records, work / "captions" / "emotionet_train.json")
    (work / "corpus.txt").write_text("\n".join(c for r in records for c in r["caption"]))
    source = Source("emotionet", work / "prepared" / "emotionet", work / "data" / "emotionet")
    cfg = write_run_config(work, REPO / "projects" / "au_blip" / "stage2_tiny.yaml", "au_blip", 2,
                           [source], {"model.load_pretrained": False,
                                      "model.tiny_lm": {"corpus": str(work / "corpus.txt"),
                                                        "pretrain_steps": 5},
                                      "run.max_epoch": 1, "run.batch_size_train": 8,
                                      "run.test_splits": [], "run.distributed": False})
    assert train_main(["--cfg-path", str(cfg)]) == 0
    found = glob.glob(str(work / "runs" / "au_blip" / "stage2" / "**" / "checkpoint_*.pth"),
                      recursive=True)
    assert [os.path.basename(p) for p in found] == ["checkpoint_0.pth"]
    return Path(found[0])


def _probe_encoder(checkpoint: Path | str) -> ExpBlipQformer:
    """``exp_blip_qformer`` as a Q-Former probe config builds it (tiny model type)."""
    cfg = OmegaConf.load(ExpBlipQformer.default_config_path("tiny")).model
    cfg.load_finetuned, cfg.finetuned = True, str(checkpoint)
    torch.manual_seed(7)  # another initialisation than the captioner's
    return registry.get_model_class("exp_blip_qformer").from_config(cfg)


def test_a_captioners_checkpoint_loads_into_the_probe_qformer(captioner_checkpoint):
    from lavis_ext.describe.captioner import load_captioner

    saved = load_weights_file(captioner_checkpoint)
    assert "opt_proj.weight" in saved and "vision_proj.weight" not in saved
    model = _probe_encoder(captioner_checkpoint)
    assert model.load_report["stage"] == 2
    own = model.state_dict()
    shared = [k for k in saved if k.startswith(("Qformer.", "query_tokens", "ln_vision.",
                                                "visual_encoder."))]
    assert any(k.startswith("Qformer.bert.encoder.") for k in shared) and "query_tokens" in shared
    for key in shared:
        assert torch.equal(own[key], saved[key]), key
    # What stage 2 never had keeps its initial weights: the text branch and the stage-1 heads.
    missing = model.load_report["missing"]
    assert "vision_proj.weight" in missing and "temp" in missing
    text = tuple(f"Qformer.{p}." for p in qformer_text_branch(model.Qformer))
    assert all(k.startswith(text) or k.split(".")[0] in ("vision_proj", "text_proj", "itm_head",
                                                         "temp") for k in missing), missing
    # The probe sees the captioner's own query features.
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    captioner = load_captioner(str(captioner_checkpoint))
    assert torch.allclose(model.probe_features(images),
                          captioner.model.probe_features(images), atol=1e-6)


@pytest.mark.parametrize("drop", ["query_tokens", "Qformer.bert.encoder.layer.1.crossattention.",
                                  "ln_vision.", "visual_encoder."])
def test_a_captioners_checkpoint_without_a_query_part_is_refused(captioner_checkpoint, tmp_path,
                                                                 drop):
    content = torch.load(captioner_checkpoint, map_location="cpu", weights_only=True)
    content["model"] = {k: v for k, v in content["model"].items() if not k.startswith(drop)}
    path = tmp_path / "checkpoint_0.pth"
    torch.save(content, path)
    with pytest.raises(IncompleteCheckpointError,
                       match=f"{path}.*{drop.split('.')[0]}.*e.g. .'{drop}"):
        _probe_encoder(path)


def test_a_stage1_checkpoint_is_still_loaded_whole_and_strictly(tmp_path):
    cfg = OmegaConf.load(ExpBlipQformer.default_config_path("tiny")).model
    stage1 = ExpBlipQformer.from_config(cfg)
    with torch.no_grad():
        stage1.query_tokens.add_(1.0)
        stage1.Qformer.cls.predictions.transform.dense.weight.add_(1.0)
    path = tmp_path / "checkpoint_9.pth"
    torch.save({"model": stage1.state_dict(), "epoch": 9}, path)
    loaded = _probe_encoder(path)
    assert loaded.load_report["stage"] == 1
    for key, value in stage1.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # A stage-1 file must hold its text branch and heads too.
    for drop in ("text_proj.", "Qformer.cls."):
        torch.save({"model": {k: v for k, v in stage1.state_dict().items()
                              if not k.startswith(drop)}}, path)
        with pytest.raises(IncompleteCheckpointError, match=f"{path}.*{drop.split('.')[0]}"):
            _probe_encoder(path)


def test_a_checkpoint_of_neither_stage_is_refused(captioner_checkpoint, tmp_path):
    saved = load_weights_file(captioner_checkpoint)
    path = tmp_path / "probe_run.pth"
    torch.save({"model": {f"encoder.{k}": v for k, v in saved.items()}}, path)
    with pytest.raises(CheckpointKindError, match=f"{path}: neither a stage-1.*'encoder'"):
        _probe_encoder(path)
    with pytest.raises(FileNotFoundError, match="model.finetuned.*no_such.pth"):
        _probe_encoder(tmp_path / "no_such.pth")


def test_a_qformer_row_probes_the_captioners_checkpoint(captioner_checkpoint, synthetic,
                                                        tmp_path, plain_process, caplog):
    """``table4_rafau_qformer_au.yaml`` run as its header says, on tiny models, given the
    captioner's run folder (its newest checkpoint is used): the probe encodes, trains, scores."""
    import json
    import logging

    with caplog.at_level(logging.INFO):
        job = run_tiny(PROBES / "table4_rafau_qformer_au.yaml", synthetic, tmp_path,
                       "model.load_finetuned=True",
                       f"model.finetuned={captioner_checkpoint.parents[1]}")
    assert f"{captioner_checkpoint}: a stage-2 captioner checkpoint" in caplog.text
    scores = json.loads((job / "result" / "probe_test_epoch0_scores.json").read_text())
    assert scores["row"] == "QFormer(AU)" and scores["n_scored"] > 0


def test_a_frozen_encoder_captioner_asks_for_the_encoder_weights(captioner_checkpoint, tmp_path):
    """A stage-2 run with ``freeze_vit: True`` saves no image encoder: with nothing else to
    supply one (a ViT-G probe without ``model.vit_weights``), the error says which key to set."""
    content = torch.load(captioner_checkpoint, map_location="cpu", weights_only=True)
    content["model"] = {k: v for k, v in content["model"].items()
                        if not k.startswith("visual_encoder.")}
    path = tmp_path / "checkpoint_19.pth"
    torch.save(content, path)
    cfg = OmegaConf.load(ExpBlipQformer.default_config_path("tiny")).model
    model = ExpBlipQformer.from_config(cfg)
    model._vit_has_weight_file, model._vit_from_checkpoint = True, True  # as ViT-G's, unset
    with pytest.raises(IncompleteCheckpointError, match=f"{path}: .*no image encoder.*"
                                                        "model.vit_weights"):
        model.load_checkpoint(str(path))


def test_a_vitg_x_row_probes_the_captioners_trained_encoder(captioner_checkpoint, synthetic,
                                                            tmp_path, plain_process, caplog):
    """Tables 3-4's ViT-G(X) rows: a ``*_vitg.yaml`` config given a captioner's checkpoint (as
    the pipeline's probe entries with ``model`` and ``row`` run it) probes the image encoder
    that the captioner's stage 2 trained, under its own row name."""
    import json
    import logging

    with caplog.at_level(logging.INFO):
        job = run_tiny(PROBES / "table4_rafau_vitg.yaml", synthetic, tmp_path,
                       "model.load_finetuned=True", f"model.finetuned={captioner_checkpoint}",
                       "run.probe.row_name=ViT-G(AU)")
    assert f"{captioner_checkpoint}: a stage-2 captioner checkpoint" in caplog.text
    scores = json.loads((job / "result" / "probe_test_epoch0_scores.json").read_text())
    assert scores["row"] == "ViT-G(AU)" and scores["source"] == "vision"
    assert scores["n_scored"] > 0
