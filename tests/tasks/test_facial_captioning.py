"""The facial_captioning task: generation settings, string ids, scores, results JSON."""
import json
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import ConcatDataset, DataLoader, Dataset

import lavis_ext  # noqa: F401  (registers the tasks)
from lavis.common.registry import registry
from lavis_ext.tasks.facial_captioning import FacialCaptioningTask
from lavis_ext.tasks.references import records_for_dataset

RECORDS = [
    {"image_id": "007", "aus": {"1": 1, "2": 1, "12": 0}, "emotions": [],
     "caption": ["It is a people who raises inner eyebrow and raises outer eyebrow.",
                 "The inner and outer brows are raised."]},
    {"image_id": "012", "aus": {"1": 0, "2": 0, "12": 1}, "emotions": ["happiness"],
     "caption": ["It is a people who pulls lip corner.", "The face shows happiness."]},
]
OUTPUTS = {"007": "the inner and outer brows are raised", "012": "a happy person who smiles"}


class CaptionSet(Dataset):
    def __init__(self, records):
        self.annotation = records  # as LAVIS's BaseDataset keeps it

    def __len__(self):
        return len(self.annotation)

    def __getitem__(self, i):
        r = self.annotation[i]
        return {"image": torch.zeros(3, 8, 8), "text_input": r["caption"][0],
                "image_id": r["image_id"]}


class FakeCaptioner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def generate(self, samples, **kwargs):
        self.calls.append(kwargs)
        return [OUTPUTS[i] for i in samples["image_id"]]


def make_task(**run):
    run_cfg = OmegaConf.create({"task": "facial_captioning", "num_beams": 3, "max_len": 40,
                                "min_len": 5, "embedding_encoder": "none", "meteor": False,
                                **run})
    return registry.get_task_class("facial_captioning").setup_task(
        cfg=SimpleNamespace(run_cfg=run_cfg))


def test_registered_and_reads_generation_settings():
    task = make_task(repetition_penalty=1.5)
    assert isinstance(task, FacialCaptioningTask)
    assert task.generate_kwargs == {"num_beams": 3, "max_length": 40, "min_length": 5,
                                    "repetition_penalty": 1.5}
    with pytest.raises(ValueError, match="select_metric"):
        make_task(select_metric="cider")


def test_evaluation_scores_writes_json_and_selects_metric(tmp_path):
    task = make_task(select_metric="rouge_l", result_dir=str(tmp_path))
    dataset = CaptionSet(RECORDS)
    model = FakeCaptioner()
    task.before_evaluation(model=model, dataset=dataset)
    results = task.evaluation(model, DataLoader(dataset, batch_size=2))
    assert model.calls[0] == {"use_nucleus_sampling": False, "num_beams": 3,
                              "max_length": 40, "min_length": 5}
    assert [r["image_id"] for r in results] == ["007", "012"]
    metrics = task.after_evaluation(val_result=results, split_name="val", epoch=3)
    assert metrics["agg_metrics"] == metrics["rouge_l"]
    assert metrics["au_f1_macro"] == pytest.approx(1.0)
    assert metrics["emotion_accuracy"] == pytest.approx(1.0)
    saved = json.loads((tmp_path / "val_epoch3_scores.json").read_text())
    assert saved["epoch"] == 3 and saved["select_metric"] == "rouge_l"
    assert {s["image_id"]: s["caption"] for s in saved["per_sample"]} == OUTPUTS
    assert "pycocoevalcap" in saved["rouge_l_definition"]


def test_ref_kinds_and_report_by_from_the_run_config(tmp_path):
    records = [dict(r, dataset=d, captions={"au-rule": r["caption"][:1],
                                            "fuse": [OUTPUTS[r["image_id"]]]})
               for r, d in zip(RECORDS, ("rafau", "gft"))]
    task = make_task(result_dir=str(tmp_path), select_metric="rouge_l",
                     ref_kinds=["au-rule"], report_by="dataset", score_protocol="best")
    assert task.ref_kinds == ["au-rule"] and task.report_by == "dataset"
    task.before_evaluation(model=FakeCaptioner(), dataset=CaptionSet(records))
    predictions = [{"image_id": i, "caption": c} for i, c in OUTPUTS.items()]
    metrics = task.after_evaluation(val_result=predictions, split_name="test", epoch=0)
    saved = json.loads((tmp_path / "test_epoch0_scores.json").read_text())
    assert saved["ref_kinds"] == ["au-rule"] and set(saved["groups"]) == {"rafau", "gft"}
    # the fused references equal the predictions; scored against au-rule only, ROUGE < 1
    assert metrics["rouge_l"] < 0.9
    assert saved["groups"]["gft"]["n_scored"] == 1
    for bad, match in (({"report_by": "subject"}, "report_by"),
                       ({"score_protocol": "bleu"}, "score_protocol")):
        with pytest.raises(ValueError, match=match):
            make_task(**bad)


def test_prediction_for_unknown_id_is_a_clear_error(tmp_path):
    task = make_task(result_dir=str(tmp_path))
    task.before_evaluation(model=FakeCaptioner(), dataset=CaptionSet(RECORDS[:1]))
    with pytest.raises(ValueError, match="not in the ground truth"):
        task.after_evaluation(val_result=[{"image_id": "012", "caption": "x"}],
                              split_name="test", epoch="best")


def test_records_from_annotation_items_files_and_concat(tmp_path):
    per_caption = [{"image_id": "1", "caption": "a", "aus": {"12": 1}},
                   {"image_id": "1", "caption": "b"}, {"image_id": "2", "caption": "c"}]
    merged = records_for_dataset(CaptionSet(per_caption))
    assert merged["1"]["caption"] == ["a", "b"] and merged["1"]["aus"] == {"12": 1}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(RECORDS))

    class Bare(Dataset):
        def __len__(self):
            return 0

    bare = Bare()
    assert set(records_for_dataset(bare, {id(bare): [str(path)]})) == {"007", "012"}
    both = records_for_dataset(ConcatDataset([CaptionSet(per_caption), CaptionSet(RECORDS)]))
    assert set(both) == {"1", "2", "007", "012"}
    with pytest.raises(ValueError, match="cannot find the ground-truth records"):
        records_for_dataset(bare)


def test_openai_encoder_from_run_cfg_caches_in_the_result_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-used")
    task = make_task(embedding_encoder="openai:text-embedding-3-small",
                     result_dir=str(tmp_path))
    encoder = task.encoder()
    assert encoder.name == "text-embedding-3-small"
    assert encoder.cache_path == tmp_path / "embeddings_cache.jsonl"
