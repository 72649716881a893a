"""projects/eval/field_*.yaml: the 2026 field's protocols (Facial-R1's tables). Each config
states its protocol as Facial-R1's evaluation code applies it, and runs one evaluation step
(its task and dataset sections as written; a tiny model and tiny data in place of the trained
captioner and the licensed test sets)."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

import lavis_ext  # noqa: F401  (registers builders, models and tasks)
from lavis.common.registry import registry
from lavis_ext import facs
from lavis_ext.captions import rules
from lavis_ext.data.records import add_captions, new_record, save_records
from support.evaluation import evaluate_once

PROJECTS = Path(__file__).resolve().parents[2] / "projects" / "eval"
# The AUs Facial-R1's released test files code (its configs/config.json), per dataset.
FACIAL_R1_TEST_AUS = {
    "disfa": (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26),
    "bp4d": (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28,
             30, 32, 34, 38, 39),
    "rafau": (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27,
              28, 29, 30, 32, 43),
}
# config -> (dataset, what it selects on)
FIELD = {
    "field_disfa_au_f1": ("disfa", "au_f1_macro"),
    "field_bp4d_au_f1": ("bp4d", "au_f1_macro"),
    "field_rafau_au_f1": ("rafau", "au_f1_macro"),
    "field_rafdb_emotion": ("rafdb", "emotion_accuracy"),
    "field_affectnet_emotion": ("affectnet", "emotion_accuracy"),
    "field_fea20k_rouge_l": ("fea20k", "rouge_l"),
}


def test_one_config_per_cell_of_the_field_table():
    assert sorted(p.stem for p in PROJECTS.glob("field_*.yaml")) == sorted(FIELD)
    table = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    for name in FIELD:  # docs/benchmarks.md gives the command that fills each cell
        assert f"projects/eval/{name}.yaml" in table, name


@pytest.mark.parametrize("name", sorted(FIELD))
def test_field_config_states_facial_r1s_protocol(name):
    dataset, selected = FIELD[name]
    run = OmegaConf.load(PROJECTS / f"{name}.yaml").run
    assert run.task == "facial_captioning" and run.evaluate is True
    assert run.select_metric == selected and list(run.test_splits) == ["test"]
    if dataset in FACIAL_R1_TEST_AUS:
        # Facial-R1's AUs, less those outside the FACS vocabulary (named in the header)
        kept = tuple(a for a in FACIAL_R1_TEST_AUS[dataset] if a in facs.AU_NUMBERS)
        assert tuple(run.au_subset) == kept
        left_out = [a for a in FACIAL_R1_TEST_AUS[dataset] if a not in facs.AU_NUMBERS]
        header = (PROJECTS / f"{name}.yaml").read_text().split("\nmodel:")[0]
        assert all(f"{a}" in header for a in left_out) and (not left_out or "left out" in header)
    assert run.score_protocol == ("facial-r1" if selected == "rouge_l" else "best")


def _records(dataset: str, root: Path) -> Path:
    (root / dataset).mkdir(parents=True)
    records = []
    items = {"au": [(1, 2), (12,)], "emotion": ["happiness", "sadness"]}
    kind = "emotion" if dataset in ("rafdb", "affectnet") else "au"
    for i, item in enumerate(items[kind]):
        Image.new("RGB", (40, 40), (60 * i, 90, 160)).save(root / dataset / f"{i}.png")
        if kind == "emotion":
            record = new_record(f"{i}.png", f"{dataset}_{i}", dataset, "test", emotions=[item])
            add_captions(record, "emotion-rule", [rules.emotion_caption([item])])
        else:
            record = new_record(f"{i}.png", f"{dataset}_{i}", dataset, "test",
                                aus={str(a): 1 for a in item})
            if dataset == "fea20k":  # the benchmark's own description, as its reader keeps it
                record["caption"] = ["The brows are raised and the lips are pulled up."]
            else:
                add_captions(record, "au-rule", [rules.au_caption(list(item))])
        records.append(record)
    path = root / f"{dataset}_test.json"
    save_records(records, path)
    return path


@pytest.mark.parametrize("name", sorted(FIELD))
def test_field_config_runs_one_evaluation_step(name, tmp_path):
    dataset, selected = FIELD[name]
    cfg = OmegaConf.load(PROJECTS / f"{name}.yaml")
    (source,) = cfg.datasets.facial_caption_mix.build_info.sources
    assert Path(source.images).name == dataset
    source.annotations.test.storage = str(_records(dataset, tmp_path / "data"))
    source.images = str(tmp_path / "data" / dataset)
    cfg.datasets.facial_caption_mix.vis_processor.eval.image_size = 112
    cfg.merge_with({"run": {"max_len": 12, "num_beams": 2, "result_dir": str(tmp_path / "out")}})
    model_cls = registry.get_model_class(cfg.model.arch)
    model = model_cls.from_config(OmegaConf.load(model_cls.default_config_path("tiny")).model)
    metrics = evaluate_once(cfg, model.eval())
    saved = json.loads((tmp_path / "out" / "test_epochbest_scores.json").read_text())
    assert saved["n_scored"] == 2 and saved["protocol"] == cfg.run.score_protocol
    if selected == "rouge_l":
        assert "rouge_score" in saved["rouge_l_definition"]
        assert metrics["agg_metrics"] == pytest.approx(saved["metrics"]["rouge_l"])
    else:
        assert saved["metrics"][selected] is not None  # labels were read, a score came back
        assert metrics["agg_metrics"] == pytest.approx(saved["metrics"][selected])
