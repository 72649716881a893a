"""Training-text settings of the paper configs: the official values (docs/models.md table)."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401
from lavis.common.registry import registry

PROJECTS = Path(__file__).resolve().parents[1] / "projects"
EXPERIMENTS = ("au_blip", "emot_blip", "exp_blip", "mix_blip", "cat_blip")
PAPER_CONFIGS = sorted(p for e in EXPERIMENTS for v in ("", "_vitb")
                       for p in (PROJECTS / e).glob(f"stage[12]{v}.yaml"))
DOC = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_paper_configs_use_the_official_text_settings(path):
    cfg = OmegaConf.load(path)
    assert cfg.model.max_txt_len == 32
    for dataset in cfg.datasets.values():
        for split in ("train", "eval"):
            assert dict(dataset.text_processor[split]) == {"name": "blip_caption", "max_words": 50}
    if "min_len" in cfg.run:
        assert cfg.run.min_len == 3
    # the table in docs/models.md states this config's values
    assert f"`{path.parent.name}/{path.name}`" in DOC


def test_official_processor_and_token_cut():
    processor = registry.get_processor_class("blip_caption").from_config(
        OmegaConf.create({"max_words": 50}))
    text = "It is a people who Raises cheek. " + "word " * 60
    out = processor(text)
    assert out.startswith("it is a people who raises cheek word") and "." not in out
    assert len(out.split()) == 50
    cls = registry.get_model_class("exp_blip")
    tiny = OmegaConf.load(cls.default_config_path("tiny")).model
    tiny.max_txt_len = 32
    model = cls.from_config(tiny)
    assert model.max_txt_len == 32
