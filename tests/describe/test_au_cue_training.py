"""The AU-cue alignment loss in a real LAVIS training run from YAML: the switches of
projects/exp_blip/stage2_au_cue.yaml on the tiny stage-2 config, records with landmarks (and
one emotion-only record), LAVIS's runner, one iteration; the logged loss is the LM loss of the
same run with weight 0 plus the cue term."""
from __future__ import annotations

import glob
import json
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "projects" / "exp_blip"
CUE_SETS = ({"1": 1, "2": 1}, {"12": 1, "6": 1}, {"4": 1}, {"25": 1, "26": 1},
            {"15": 1, "17": 1}, {"12": 1})


def _records(work: Path) -> Path:
    """7 drawn faces with their drawn points and AU labels, and one emotion-only face."""
    from lavis_ext.data.records import new_record, save_records
    from lavis_ext.data.synthetic.face import draw_face_points
    from lavis_ext.facs import au_name

    rng = random.Random(0)
    images = work / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(8):
        aus = CUE_SETS[i % len(CUE_SETS)] if i < 7 else {}
        image, points = draw_face_points({int(a): 3 for a in aus}, rng, 112)
        image.save(images / f"{i}.png")
        record = new_record(f"{i}.png", f"face{i}", "emotionet", "train", aus=aus,
                            emotions=[] if aus else ["happiness"],
                            face_landmarks=[[float(x), float(y)] for x, y in points])
        record["caption"] = ["The face shows " + ", ".join(au_name(int(a)).noun for a in aus)
                             + "." if aus else "The face looks happy."]
        records.append(record)
    save_records(records, work / "train.json")
    (work / "corpus.txt").write_text("\n".join(r["caption"][0] for r in records) * 4)
    return work / "train.json"


def _config(work: Path, weight: float) -> Path:
    """stage2_tiny.yaml on these records, switched on as stage2_au_cue.yaml switches on."""
    cfg = OmegaConf.load(PROJECTS / "stage2_tiny.yaml")
    switches = OmegaConf.load(PROJECTS / "stage2_au_cue.yaml")
    data = cfg.datasets.facial_caption_mix
    data.caption_kinds = None
    data.build_info.sources = [{"annotations": {"train": {"storage": str(work / "train.json")}},
                                "images": str(work / "images")}]
    data.vis_processor.train.name = \
        switches.datasets.facial_caption_mix.vis_processor.train.name
    cfg.model.au_cue_loss = dict(switches.model.au_cue_loss, weight=weight)
    cfg.model.load_pretrained = False
    cfg.model.tiny_lm = {"corpus": str(work / "corpus.txt"), "pretrain_steps": 20}
    cfg.run.update({"max_epoch": 1, "batch_size_train": 8, "test_splits": [],
                    "output_dir": str(work / f"run_{weight:g}"), "warmup_steps": 1})
    path = work / f"au_cue_{weight:g}.yaml"
    OmegaConf.save(cfg, path)
    return path


def _tiny_lm_built(config: Path) -> None:
    """Build the tiny LLM into the cache first: building it seeds torch's generator, so the
    run that built it would start from other random parts than the run that reads it."""
    from lavis_ext.models.exp_blip import ExpBlip
    from lavis_ext.models.tiny_lm import tiny_lm_dir

    defaults = OmegaConf.load(ExpBlip.default_config_path("tiny")).model
    merged = OmegaConf.merge(defaults, OmegaConf.load(config).model)
    tiny_lm_dir(**OmegaConf.to_container(merged.tiny_lm))


def _train_loss(folder: Path) -> float:
    logs = glob.glob(str(folder / "**" / "log.txt"), recursive=True)
    assert len(logs) == 1, logs
    losses = [float(json.loads(line)["train_loss"]) for line in open(logs[0])
              if "train_loss" in line]
    assert len(losses) == 1, losses
    return losses[0]


def test_runner_trains_with_the_cue_loss_from_yaml(tmp_path, plain_process, monkeypatch):
    import lavis_ext.entry as entry
    from lavis_ext.models import attention

    _records(tmp_path)
    seen: list[dict] = []
    real = attention.alignment_loss

    def spy(probabilities, heatmaps, grid, weight=9.0, mask=None):
        loss = real(probabilities, heatmaps, grid, weight=weight, mask=mask)
        seen.append({"loss": float(loss.detach()), "grid": tuple(heatmaps.shape),
                     "mask": None if mask is None else mask.tolist()})
        return loss

    monkeypatch.setattr(attention, "alignment_loss", spy)
    off, on = _config(tmp_path, 0.0), _config(tmp_path, 9.0)
    _tiny_lm_built(off)
    assert entry.train_main(["--cfg-path", str(off)]) == 0
    assert seen == []  # weight 0: nothing captured, the plain LM loss
    assert entry.train_main(["--cfg-path", str(on)]) == 0
    assert len(seen) == 1, seen  # one iteration: the batch of all 8 records
    cue = seen[0]
    assert cue["grid"] == (8, 7, 7)  # 112 px maps, averaged onto the tiny encoder's grid
    assert sorted(cue["mask"]) == [0.0] + [1.0] * 7  # the emotion-only record masked out
    assert 0.0 < cue["loss"] <= 18.0
    lm_only, with_cue = _train_loss(tmp_path / "run_0"), _train_loss(tmp_path / "run_9")
    print(f"train_loss weight 0: {lm_only:.3f}, weight 9: {with_cue:.3f}, cue term "
          f"{cue['loss']:.3f}")
    # Same seed, data, crops and random parts: the logged losses differ by the cue term
    # (the log rounds each to 3 decimals).
    assert with_cue == pytest.approx(lm_only + cue["loss"], abs=2e-3), (lm_only, with_cue, cue)
