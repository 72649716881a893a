"""projects/eval: each Table 2 config loads, follows the paper's protocol, and runs one
evaluation step (its task and dataset sections as written; a tiny model and tiny data in
place of the trained captioner and the licensed test sets)."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

import lavis_ext  # noqa: F401  (registers builders, models and tasks)
from lavis.common.config import Config
from lavis.common.registry import registry
from lavis_ext.captions import rules
from lavis_ext.data.records import add_captions, new_record, save_records
from support.evaluation import evaluate_once

PROJECTS = Path(__file__).resolve().parents[2] / "projects" / "eval"
# the ViT-B / OPT-2.7B rows of Table 2 (also the captioners Table 5 rates)
VITB = ("au_blip_vitb", "mix_blip_vitb", "cat_blip_vitb", "exp_blip_vitb")
MODELS = (*VITB, "au_blip", "au_blip_vitg_opt2.7b", "emot_blip", "exp_blip", "mix_blip", "cat_blip",
          "blip2_pretrained", "blip2_coco")
# the two BLIP-2 rows: LAVIS's blip2_opt as released (model type, released weights, image size)
BLIP2 = {"blip2_pretrained": ("pretrain_opt6.7b", "blip2_pretrained_opt6.7b.pth", 224),
         "blip2_coco": ("caption_coco_opt6.7b", "blip2_caption_opt6.7b.pth", 364)}
CONFIGS = [PROJECTS / f"table2_{m}.yaml" for m in MODELS]


def test_one_table2_config_per_model():
    assert sorted(p.name for p in PROJECTS.glob("table2_*.yaml")) == sorted(p.name for p in CONFIGS)


@pytest.mark.parametrize("name", VITB)
def test_vitb_rows_load_the_vitb_captioner_and_opt_2_7b(name):
    cfg = OmegaConf.load(PROJECTS / f"table2_{name}.yaml")
    model = name[:-len("_vitb")]
    assert cfg.model.model_type == "vitb_opt2.7b" and cfg.model.opt_model == "facebook/opt-2.7b"
    header = (PROJECTS / f"table2_{name}.yaml").read_text().split("\nmodel:")[0]
    assert f"projects/{model}/stage2_vitb.yaml" in header
    assert f"model.finetuned=output/{model}/stage2_vitb/" in header
    assert cfg.run.output_dir == f"output/eval/table2_{name}"


@pytest.fixture(scope="module")
def tiny_models():
    built = {}

    def get(arch):
        if arch not in built:
            cls = registry.get_model_class(arch)
            cfg = OmegaConf.load(cls.default_config_path("tiny")).model
            built[arch] = cls.from_config(cfg).eval()
        return built[arch]
    return get


def _test_data(root: Path) -> dict[str, Path]:
    files = {}
    for dataset, au_sets in (("rafau", [(1, 2), (12,)]), ("gft", [(6, 12), (4,)])):
        (root / dataset).mkdir(parents=True)
        records = []
        for i, aus in enumerate(au_sets):
            Image.new("RGB", (40, 40), (40 * i, 90, 160)).save(root / dataset / f"{i}.png")
            record = new_record(f"{i}.png", f"{dataset}_{i}", dataset, "test",
                                aus={str(a): 1 for a in aus})
            add_captions(record, "au-rule", [rules.au_caption(list(aus))])
            add_captions(record, "au-llm", ["The face moves its brows and lips."])
            add_captions(record, "fuse", ["A fused description that is not a reference."])
            records.append(record)
        files[dataset] = root / f"{dataset}_test.json"
        save_records(records, files[dataset])
    return files


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_table2_config_runs_one_evaluation_step(path, tmp_path, tiny_models):
    cfg = OmegaConf.load(path)
    run = cfg.run
    # the paper's protocol, as written in the file
    assert run.task == "facial_captioning" and run.evaluate is True
    assert list(run.ref_kinds) == ["au-rule", "au-llm"] and run.report_by == "dataset"
    assert run.score_protocol == "best" and run.meteor is True
    assert run.embedding_encoder.name == "openai"
    assert run.embedding_encoder.model == "text-embedding-ada-002"
    assert list(run.test_splits) == ["test"]
    if path.stem[len("table2_"):] in BLIP2:
        model_type, weights, size = BLIP2[path.stem[len("table2_"):]]
        assert cfg.model.arch == "expblip_blip2_opt" and cfg.model.model_type == model_type
        # as LAVIS's Config merges it: the model type's defaults under the file's model section
        model_cfg = Config.build_model_config(cfg).model
        loaded = model_cfg.finetuned if model_cfg.get("load_finetuned") else model_cfg.pretrained
        assert loaded.endswith("/" + weights) and model_cfg.image_size == size
        assert cfg.datasets.facial_caption_mix.vis_processor.eval.image_size == size
        stand_in = "exp_blip"  # tiny stand-in for the 6.7B model
    else:
        assert cfg.model.load_finetuned is True
        stand_in = cfg.model.arch
    sources = cfg.datasets.facial_caption_mix.build_info.sources
    assert [Path(s.annotations.test.storage).name for s in sources] == \
        ["rafau_test.json", "gft_test.json"]
    assert all("train" not in s.annotations for s in sources)
    # tiny stand-ins: local test data, a tiny model, no network, no Java for METEOR
    files = _test_data(tmp_path / "data")
    for source, dataset in zip(sources, ("rafau", "gft")):
        source.annotations.test.storage = str(files[dataset])
        source.images = str(tmp_path / "data" / dataset)
    cfg.datasets.facial_caption_mix.vis_processor.eval.image_size = 112
    cfg.merge_with({"run": {"embedding_encoder": "none", "meteor": False, "max_len": 12,
                            "num_beams": 2, "result_dir": str(tmp_path / "result")}})
    metrics = evaluate_once(cfg, tiny_models(stand_in))
    assert {"rouge_l", "agg_metrics"} <= set(metrics)
    saved = json.loads((tmp_path / "result" / "test_epochbest_scores.json").read_text())
    assert set(saved["groups"]) == {"rafau", "gft"}
    assert saved["ref_kinds"] == ["au-rule", "au-llm"] and saved["n_scored"] == 4


TABLE1 = ("bp4d", "disfa", "gft", "rafau", "emotionet", "affectnet", "rafdb", "faceme")
TABLE5 = [PROJECTS / f"table5_{m}_vitb.yaml" for m in ("mix_blip", "cat_blip", "exp_blip")]


def test_table5_configs_are_the_three_vitb_fused_caption_models():
    assert sorted(PROJECTS.glob("table5_*.yaml")) == sorted(TABLE5)


@pytest.mark.parametrize("path", TABLE5, ids=lambda p: p.stem)
def test_table5_config_captions_every_table1_test_set(path, tmp_path, tiny_models):
    """Table 5 rates captions of test images from all Table 1 datasets (ViT-B captioners):
    one evaluation step writes the (image_id, caption) file that `expblip rate` reads."""
    from lavis_ext.rate.kit import read_predictions

    cfg = OmegaConf.load(path)
    assert cfg.model.model_type == "vitb_opt2.7b" and cfg.run.evaluate is True
    sources = cfg.datasets.facial_caption_mix.build_info.sources
    assert [Path(s.annotations.test.storage).name for s in sources] == \
        [f"{d}_test.json" for d in TABLE1]
    assert cfg.datasets.facial_caption_mix.caption_kinds is None
    files = _test_data(tmp_path / "data")  # two of the eight, on tiny data
    cfg.datasets.facial_caption_mix.build_info.sources = [
        {"annotations": {"test": {"storage": str(files[d])}}, "images": str(tmp_path / "data" / d)}
        for d in ("rafau", "gft")]
    cfg.datasets.facial_caption_mix.vis_processor.eval.image_size = 112
    cfg.merge_with({"run": {"max_len": 12, "num_beams": 2, "result_dir": str(tmp_path / "result")}})
    evaluate_once(cfg, tiny_models(cfg.model.arch))
    read = read_predictions(tmp_path / "result" / "test_epochbest.json")  # as the kit reads it
    assert len(read) == 4
