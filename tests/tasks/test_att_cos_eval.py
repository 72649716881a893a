"""ATT-COS in the ``facial_captioning`` evaluation: the Table 2 config with its eval processor
switched to ``face_image_eval_au_cue``, prepared test records (aligned crops, 5 points) of
drawn faces, the tiny captioner; the reported mean and count are those of the per-image
ATT-COS that ``expblip explain --ann`` writes for the same images with the same weights."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers builders, models, processors and tasks)
from support.evaluation import evaluate_once

EVAL = Path(__file__).resolve().parents[2] / "projects" / "eval" / "table2_exp_blip.yaml"
SIZE = 112  # the tiny model's image size; the crops are prepared at it, as prepare does at 224
MARGIN = 0.2  # prepare's and explain's default --align-margin
AU_SETS = ({"1": 1, "2": 1}, {"12": 1, "6": 1, "4": 0}, {"4": 1}, {"25": 1, "26": 1},
           {"15": 1, "17": 1}, {"12": 1})


def _records(root: Path) -> dict[str, Path]:
    """Per dataset of the Table 2 config (rafau, gft): drawn faces aligned by ``prepare``
    from their drawn points; 6 with labelled AUs, one emotion-only, one with every AU coded
    absent (neither of the last two is scored)."""
    from lavis_ext.captions import rules
    from lavis_ext.data.records import add_captions, new_record, save_records
    from lavis_ext.data.synthetic.face import draw_face_points
    from lavis_ext.describe.prepare_faces import FacePreparer, FaceSettings

    rng = random.Random(3)
    files = {}
    labels = [*AU_SETS, {}, {"12": 0, "1": 0}]
    for part, dataset in enumerate(("rafau", "gft")):
        images = root / dataset
        images.mkdir(parents=True)
        records = []
        for i, aus in enumerate(labels[part::2]):
            present = [int(a) for a, v in aus.items() if v == 1]
            image, points = draw_face_points({a: 3 for a in present}, rng, 140)
            image.save(images / f"{i}.png")
            d = float(np.linalg.norm(points[1] - points[0]))
            low, high = points.min(axis=0) - 0.6 * d, points.max(axis=0) + 0.6 * d
            record = new_record(f"{i}.png", f"{dataset}_{i}", dataset, "test", aus=aus,
                                emotions=[] if aus else ["happiness"],
                                face_box=[float(low[0]), float(low[1]),
                                          float(high[0] - low[0]), float(high[1] - low[1])],
                                face_landmarks=[[float(x), float(y)] for x, y in points])
            add_captions(record, "au-rule", [rules.au_caption(present) if present
                                             else "A calm face."])
            records.append(record)
        aligned, summary = FacePreparer(FaceSettings(size=SIZE, margin=MARGIN)).prepare(
            records, images, root / f"{dataset}_crops", progress=False)
        assert summary["aligned"] == len(records), summary
        files[dataset] = root / f"{dataset}_test.json"
        save_records(aligned, files[dataset])
    return files


def _config(root: Path, files: dict[str, Path], processor: str):
    cfg = OmegaConf.load(EVAL)
    data = cfg.datasets.facial_caption_mix
    for source, dataset in zip(data.build_info.sources, ("rafau", "gft")):
        source.annotations.test.storage = str(files[dataset])
        source.images = str(root / "data" / dataset)
    data.vis_processor.eval = {"name": processor, "image_size": SIZE}
    cfg.merge_with({"run": {"embedding_encoder": "none", "meteor": False, "max_len": 12,
                            "num_beams": 1, "result_dir": str(root / f"result_{processor}")}})
    return cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A LAVIS-style training checkpoint of the tiny captioner, so `explain` loads the very
    weights the evaluation runs."""
    from lavis_ext.describe.captioner import load_captioner
    from lavis_ext.models.exp_blip import ExpBlip

    torch.manual_seed(0)
    net = load_captioner("exp_blip:tiny").model
    config = OmegaConf.to_container(OmegaConf.load(ExpBlip.default_config_path("tiny")).model)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_0.pth"
    torch.save({"model": net.state_dict(), "config": {"model": config}, "epoch": 0}, path)
    return path


def test_evaluation_reports_the_att_cos_of_explain_ann(tmp_path, checkpoint, one_torch_thread):
    from lavis_ext.cli import main
    from lavis_ext.data.records import load_records
    from lavis_ext.describe.captioner import load_captioner

    files = _records(tmp_path / "data")
    model = load_captioner(str(checkpoint)).model
    metrics = evaluate_once(_config(tmp_path, files, "face_image_eval_au_cue"), model)
    assert metrics["att_cos_images"] == len(AU_SETS)  # emotion-only and all-absent: unscored
    saved = json.loads((tmp_path / "result_face_image_eval_au_cue" /
                        "test_epochbest_scores.json").read_text())
    assert saved["metrics"]["att_cos"] == metrics["att_cos"]
    per_image = {s["image_id"]: s["att_cos"] for s in saved["per_sample"]}
    assert sorted(i for i, v in per_image.items() if v is not None) == sorted(
        f"{d}_{i}" for d, n in (("rafau", 3), ("gft", 3)) for i in range(n))
    for group in ("rafau", "gft"):
        assert saved["groups"][group]["metrics"]["att_cos_images"] == 3

    # explain --ann on the same records, the same weights, the same crops and points.
    out = tmp_path / "explained"
    expected = {}
    for dataset, path in files.items():
        code = main(["explain", "--ann", str(path), "--images", str(tmp_path / "data" / dataset),
                     "--no-detect", "--align-margin", str(MARGIN), "--model", str(checkpoint),
                     "--num-beams", "1", "--max-length", "12", "--out", str(out / dataset)])
        assert code == 0
        summary = json.loads((out / dataset / "explain_summary.json").read_text())
        for row in summary["images"]:
            table = json.loads((out / dataset / f"{row['image_id']}_explain.json").read_text())
            assert table["landmark_source"] == "record"
            if table["reference"]["cue_source"] == "labels":
                expected[row["image_id"]] = row["reference_att_cos"]
    assert sorted(expected) == sorted(i for i, v in per_image.items() if v is not None)
    for image_id, value in expected.items():  # explain rounds to 4 decimals
        assert per_image[image_id] == pytest.approx(value, abs=1e-4), image_id
    assert metrics["att_cos"] == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
    # ... and the numbers are not all alike (the test would not see a wrong map otherwise).
    assert np.ptp(list(expected.values())) > 0.01
    records = {r["image_id"]: r for p in files.values() for r in load_records(p)}
    assert all(records[i]["face_image"] for i in expected)

    # With the plain eval processor nothing is captured and no ATT-COS is reported.
    plain = evaluate_once(_config(tmp_path, files, "blip_image_eval"), model)
    assert not {"att_cos", "att_cos_images"} & set(plain)
    assert {k: v for k, v in plain.items() if k != "agg_metrics"} == {
        k: v for k, v in metrics.items() if k not in ("att_cos", "att_cos_images", "agg_metrics")}
