"""`expblip evaluate --pred` on other systems' outputs: Facial-R1 and ExpLLM formats, JSONL,
format detection, and AU codes read from text; F1 and accuracy computed by hand below."""
import json

import pytest

from lavis_ext.cli import main
from lavis_ext.data.records import new_record, save_records
from lavis_ext.metrics.predictions import (PredictionFormatError, detect_format,
                                           load_predictions, split_text)
from lavis_ext.metrics.recognition import parse_caption

# Four test images, AUs 1, 2, 4, 12 coded, one basic emotion each.
GT = [("a", {"1": 1, "2": 1, "4": 0, "12": 0}, "surprise"),
      ("b", {"1": 0, "2": 0, "4": 1, "12": 0}, "anger"),
      ("c", {"1": 0, "2": 0, "4": 0, "12": 1}, "happiness"),
      ("d", {"1": 1, "2": 0, "4": 1, "12": 0}, "sadness")]

FACIAL_R1 = {
    # the reasoning weighs AU4 and fear, then rejects them: only the answer counts
    "a": "<think>The brows rise; is AU4 there? No. Fear is possible, but the mouth is relaxed."
         "</think><answer>AU1, AU2; Surprise</answer>",
    "b": "<think>Brows pulled together, lids tight.</think><answer>AU4, AU7; Anger</answer>",
    "c": "<think>Cheeks up, lip corners up.</think><answer>AU6, AU12; Happiness</answer>",
    "d": "<think>Brows lowered, lips pressed.</think><answer>AU4, AU15; Anger</answer>",
}
# Hand count over the coded AUs (AU6, AU7, AU15 are not coded: not scored):
#   AU1: labels a d, said a -> tp 1 fp 0 fn 1 -> F1 2/3;  AU2, AU4, AU12: every one right -> 1
#   macro (2/3 + 3) / 4 = 11/12; emotions a b c right, d wrong -> 3/4.
# Read from the whole text instead, a would gain AU4 and fear: AU4 F1 4/5, accuracy 2/4.
FACIAL_R1_F1, FACIAL_R1_ACC = 11 / 12, 3 / 4

EXPLLM = {
    "a": "**Key Observations:** The inner brow raiser (AU1) is active and the eyes widen.\n"
         "**Overall Emotional Interpretation:** Wide eyes can signal fear or surprise.\n"
         "**Conclusion:** The expression is surprise.",
    "b": "**Key Observations:** The brows are lowered (AU4) and there is no lip corner puller "
         "(AU12).\n**Overall Emotional Interpretation:** The tension suggests anger.\n"
         "**Conclusion:** Anger.",
    "c": "**Key Observations:** Cheek raiser (AU6) and lip corner puller (AU12).\n"
         "**Overall Emotional Interpretation:** A genuine smile.\n**Conclusion:** Happiness.",
    "d": "**Key Observations:** Inner brow raiser (AU1) with brow lowerer (AU4).\n"
         "**Overall Emotional Interpretation:** It could read as sadness or fear.\n"
         "**Conclusion:** Fear.",
}
# AU1: labels a d, said a d -> 1;  AU2: label a, never said -> tp 0 fn 1 -> 0;
# AU4: labels b d, said b d -> 1;  AU12: label c, said c (b negates it) -> 1;
#   macro 3/4. Emotions from the conclusion: a b c right, d wrong -> 3/4 (from the whole
#   text a and d would name two emotions each: 2/4).
EXPLLM_F1, EXPLLM_ACC = 3 / 4, 3 / 4


@pytest.fixture
def gt_file(tmp_path):
    records = [new_record(f"{i}.jpg", i, "rafau", "test", aus=aus, emotions=[emo])
               for i, aus, emo in GT]
    path = tmp_path / "gt.json"
    save_records(records, path)
    return path


def _evaluate(tmp_path, gt_file, pred, *extra):
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(pred), "--ann", str(gt_file), "--encoder", "none",
                 "--no-meteor", "--out", str(out), "--name", "m", *extra])
    assert code == 0
    return json.loads(out.read_text())["m"]


def test_facial_r1_jsonl_scored_from_the_answer(tmp_path, gt_file, capsys):
    pred = tmp_path / "facial_r1.jsonl"
    pred.write_text("".join(json.dumps({"id": k, "output": v}) + "\n"
                            for k, v in FACIAL_R1.items()))
    result = _evaluate(tmp_path, gt_file, pred)
    assert "read as facial-r1 (an <answer> tag in 4 of 4 texts)" in capsys.readouterr().out
    assert result["prediction_format"]["format"] == "facial-r1"
    assert result["metrics"]["au_f1_macro"] == pytest.approx(FACIAL_R1_F1)
    assert result["recognition"]["au_f1"]["1"] == pytest.approx(2 / 3)
    assert result["metrics"]["emotion_accuracy"] == pytest.approx(FACIAL_R1_ACC)
    sample = next(s for s in result["per_sample"] if s["image_id"] == "a")
    assert sample["aus_mentioned"] == [1, 2] and sample["emotions_mentioned"] == ["surprise"]
    assert "<think>" not in sample["caption"] and "relaxed" in sample["caption"]
    # read as plain captions, the rejected AU4 and fear count against it
    plain = _evaluate(tmp_path, gt_file, pred, "--format", "caption")
    assert plain["recognition"]["au_f1"]["4"] == pytest.approx(4 / 5)
    assert plain["metrics"]["emotion_accuracy"] == pytest.approx(2 / 4)


def test_expllm_json_emotion_from_the_conclusion(tmp_path, gt_file, capsys):
    pred = tmp_path / "expllm.json"
    pred.write_text(json.dumps([{"image_id": k, "response": v} for k, v in EXPLLM.items()]))
    result = _evaluate(tmp_path, gt_file, pred)
    assert "read as expllm" in capsys.readouterr().out
    assert result["recognition"]["au_f1"] == {"1": 1.0, "2": 0.0, "4": 1.0, "12": 1.0}
    assert result["metrics"]["au_f1_macro"] == pytest.approx(EXPLLM_F1)
    assert result["metrics"]["emotion_accuracy"] == pytest.approx(EXPLLM_ACC)
    plain = _evaluate(tmp_path, gt_file, pred, "--format", "caption")
    assert plain["metrics"]["emotion_accuracy"] == pytest.approx(2 / 4)


def test_our_own_format_still_detected_as_captions(tmp_path, gt_file, capsys):
    pred = tmp_path / "ours.json"
    pred.write_text(json.dumps([{"image_id": "c", "caption": "He raises his cheeks and "
                                 "pulls his lip corners: happy."}]))
    result = _evaluate(tmp_path, gt_file, pred)
    assert "read as caption" in capsys.readouterr().out
    assert result["recognition"]["au_f1"]["12"] == 1.0
    assert result["metrics"]["emotion_accuracy"] == 1.0


def test_fields_by_name_and_id_mapping(tmp_path):
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"a": "AU1", "b": "AU4"}))
    items, summary = load_predictions(pred)
    assert [(p["image_id"], p["caption"]) for p in items] == [("a", "AU1"), ("b", "AU4")]
    pred.write_text(json.dumps([{"sample": "a", "gen": "AU1"}]))
    items, _ = load_predictions(pred, id_field="sample", text_field="gen")
    assert items[0]["image_id"] == "a"


def test_bad_prediction_files_name_the_place(tmp_path, gt_file, capsys):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"id": "a", "text": "AU1"}\n{"id": "b", "text": \n')
    with pytest.raises(PredictionFormatError, match=r"p\.jsonl:2: not valid JSON"):
        load_predictions(pred)
    pred.write_text('{"id": "a", "words": "AU1"}\n{"id": "b", "words": "AU4"}\n')
    with pytest.raises(PredictionFormatError, match=r"p\.jsonl:1: no text field.*caption"):
        load_predictions(pred)
    code = main(["evaluate", "--pred", str(pred), "--ann", str(gt_file), "--encoder", "none",
                 "--no-meteor"])
    assert code == 2 and "--text-field" in capsys.readouterr().err


def test_incomplete_outputs_counted(tmp_path, gt_file):
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"id": "a", "text": FACIAL_R1["a"]}) + "\n"
                    + json.dumps({"id": "b", "text": "<think>ran out of tokens"}) + "\n")
    items, summary = load_predictions(pred, "facial-r1")
    assert summary["n_incomplete"] == 1 and summary["incomplete_examples"] == ["b"]
    assert items[1]["au_text"] == "" and items[1]["caption"] == "ran out of tokens"


def test_detection_and_split():
    assert detect_format(list(EXPLLM.values()))[0] == "expllm"
    assert detect_format(["The brows are raised."])[0] == "caption"
    parts, complete = split_text(EXPLLM["d"], "expllm")
    assert complete and parts["emotion_text"] == "Fear."


@pytest.mark.parametrize("text, aus, negated", [
    ("brow lowerer (AU4)", {4}, set()),
    ("no brow lowerer (AU4), but cheek raiser (AU6, AU7)", {6, 7}, {4}),
    ("AU1+AU2+AU12B", {1, 2, 12}, set()),
    ("AU01 and AU 4", {1, 4}, set()),
    ("R12 is not a code, LAU12 is", {12}, set()),
    ("[AU25] lips part", {25}, set()),
])
def test_au_codes_read_from_text(text, aus, negated):
    parsed = parse_caption(text)
    assert parsed.aus == aus and parsed.negated_aus == negated
