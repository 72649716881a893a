"""CoT descriptions in ExpLLM's three parts: the section parser (both colon placements, any
case) and `expblip evaluate --format cot` (AU F1 from the observations, emotion accuracy from
the conclusion, ROUGE-L / METEOR against cot references); numbers counted by hand below."""
import json

import pytest

from lavis_ext.captions.cot import cot_caption
from lavis_ext.cli import main
from lavis_ext.data.records import add_captions, new_record, save_records
from lavis_ext.metrics.cot import parse_cot, split_cot
from lavis_ext.metrics.predictions import split_text

INSIDE = ("**Key Observations:** Inner brow raiser (AU1) at slight intensity.\n"
          "**Overall Emotional Interpretation:** Fear is possible, but surprise fits.\n"
          "**Conclusion:** Surprise.")
OUTSIDE = ("Let me look. **key observations**: Inner brow raiser (AU1) at slight intensity.\n"
           "**OVERALL EMOTIONAL INTERPRETATION**: Fear is possible, but surprise fits.\n"
           "**Conclusion**: Surprise.")


@pytest.mark.parametrize("text", [INSIDE, OUTSIDE, " ".join(INSIDE.split())])
def test_sections_with_either_colon(text):
    sections = split_cot(text)
    assert sections.complete and sections.missing == []
    assert sections.observations == "Inner brow raiser (AU1) at slight intensity."
    assert sections.interpretation == "Fear is possible, but surprise fits."
    assert sections.conclusion == "Surprise."
    parsed = parse_cot(text)
    # fear, weighed in the interpretation, is not concluded
    assert parsed.aus == {1} and parsed.intensities == {1: 2} and parsed.emotions == {"surprise"}


def test_missing_and_misplaced_sections():
    sections = split_cot("**Key Observations:** Brow lowerer (AU4). **Conclusion:** Anger.")
    assert sections.missing == ["Overall Emotional Interpretation"] and not sections.complete
    assert sections.observations == "Brow lowerer (AU4)." and sections.conclusion == "Anger."
    swapped = split_cot("**Conclusion:** Anger. **Key Observations:** Brow lowerer (AU4). "
                        "**Overall Emotional Interpretation:** Tense.")
    assert swapped.missing == [] and swapped.out_of_order and not swapped.complete
    assert parse_cot("The brows are lowered; anger.").aus == set()
    parts, complete = split_text(INSIDE, "cot")
    assert complete and parts["au_text"].startswith("Inner brow") \
        and parts["emotion_text"] == "Surprise."


# Three test images, AUs 1, 2, 4, 12 coded (AU6 is not: never scored).
GT = [("a", (1, 2), "surprise"), ("b", (4,), "anger"), ("c", (12,), "happiness")]
PRED = {
    "a": cot_caption([1, 2], ["surprise"]),  # the reference itself
    # the interpretation names AU12 as a comparison: not an observation
    "b": "**Key Observations**: Brow lowerer (AU4).\n**Overall Emotional Interpretation**: "
         "Unlike a lip corner puller (AU12) face, this one is tense.\n**Conclusion**: Anger.",
    "c": "**Key Observations:** Cheek raiser (AU6) and lip corner puller (AU12).\n"
         "**Overall Emotional Interpretation:** Happiness or contempt.\n**Conclusion:** "
         "Contempt.",
}
# cot: AU1 a/a, AU2 a/a, AU4 b/b, AU12 c/c -> F1 1 each, macro 1; emotions a b right, c wrong
# -> 2/3. Read as expllm (AUs from all three parts) b also says AU12: AU12 tp 1 fp 1 -> 2/3,
# macro (3 + 2/3) / 4 = 11/12.


@pytest.fixture
def gt_file(tmp_path):
    records = []
    for image_id, present, emotion in GT:
        aus = {str(a): int(a in present) for a in (1, 2, 4, 12)}
        record = new_record(f"{image_id}.jpg", image_id, "rafau", "test", aus=aus,
                            emotions=[emotion])
        add_captions(record, "au-rule", ["It is a people who raises something."])
        if image_id != "c":  # c has no cot reference
            add_captions(record, "cot", [cot_caption(present, [emotion])])
        records.append(record)
    path = tmp_path / "gt.json"
    save_records(records, path)
    return path


def _evaluate(tmp_path, gt_file, *extra):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": k, "caption": v} for k, v in PRED.items()]))
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(pred), "--ann", str(gt_file), "--encoder", "none",
                 "--out", str(out), "--name", "m", *extra]) == 0
    return json.loads(out.read_text())["m"]


def test_evaluate_cot_predictions(tmp_path, gt_file, capsys):
    result = _evaluate(tmp_path, gt_file, "--format", "cot", "--ref-kinds", "cot")
    assert "read as cot (--format)" in capsys.readouterr().out
    assert result["recognition"]["au_f1"] == {"1": 1.0, "2": 1.0, "4": 1.0, "12": 1.0}
    assert result["metrics"]["au_f1_macro"] == pytest.approx(1.0)
    assert result["metrics"]["emotion_accuracy"] == pytest.approx(2 / 3)
    assert result["prediction_format"]["n_incomplete"] == 0
    # caption metrics against the cot references only: c has none
    assert result["n_without_reference"] == 1
    sample = {s["image_id"]: s for s in result["per_sample"]}
    assert sample["a"]["rouge_l"] == pytest.approx(1.0)
    assert sample["a"]["meteor"] > 0.9
    assert 0 < sample["b"]["rouge_l"] < 1 and "rouge_l" not in sample["c"]
    assert result["metrics"]["rouge_l"] == pytest.approx((1.0 + sample["b"]["rouge_l"]) / 2)
    assert sample["b"]["aus_mentioned"] == [4] and sample["c"]["emotions_mentioned"] == \
        ["contempt"]
    # the older expllm reading takes AUs from every part: b's comparison counts against it
    whole = _evaluate(tmp_path, gt_file, "--format", "expllm", "--ref-kinds", "cot",
                      "--no-meteor")
    assert whole["recognition"]["au_f1"]["12"] == pytest.approx(2 / 3)
    assert whole["metrics"]["au_f1_macro"] == pytest.approx(11 / 12)


def test_facial_captioning_task_reads_cot_text(tmp_path):
    """run.text_format: cot scores generated CoT text like `evaluate --format cot`."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    import lavis_ext  # noqa: F401  (registers the task)
    from lavis.common.registry import registry

    records = []
    for image_id, present, emotion in GT:
        aus = {str(a): int(a in present) for a in (1, 2, 4, 12)}
        records.append(dict(new_record(f"{image_id}.jpg", image_id, "rafau", "test", aus=aus,
                                       emotions=[emotion]),
                            caption=[cot_caption(present, [emotion])]))

    def task(fmt):
        run_cfg = OmegaConf.create({"task": "facial_captioning", "num_beams": 1,
                                    "max_len": 40, "embedding_encoder": "none",
                                    "meteor": False, "result_dir": str(tmp_path),
                                    "text_format": fmt})
        made = registry.get_task_class("facial_captioning").setup_task(
            cfg=SimpleNamespace(run_cfg=run_cfg))
        made._records = {r["image_id"]: r for r in records}
        return made

    predictions = [{"image_id": k, "caption": v} for k, v in PRED.items()]
    cot = task("cot").score(predictions, "test", 0, str(tmp_path))
    whole = task("caption").score(predictions, "test", 0, str(tmp_path))
    assert cot["au_f1_macro"] == pytest.approx(1.0)
    assert cot["emotion_accuracy"] == pytest.approx(2 / 3)
    assert whole["au_f1_macro"] == pytest.approx(11 / 12)  # b's comparison counts
    assert whole["emotion_accuracy"] < cot["emotion_accuracy"]  # c names happiness too
    with pytest.raises(ValueError, match="text_format"):
        task("facial-r1")
