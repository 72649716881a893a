"""evaluate_captions and `expblip evaluate`: bad inputs, counted skips, the printed table."""
import json

import pytest

from lavis_ext.cli import main
from lavis_ext.data.records import new_record, save_records
from lavis_ext.metrics.evaluate import EvaluationError, evaluate_captions


def gt_records():
    a = new_record("a.jpg", "0007", "rafau", "test", aus={"1": 1, "2": 1, "12": 0})
    a["caption"] = ["It is a people who raises inner eyebrow and raises outer eyebrow.",
                    "The inner and outer brows are raised."]
    b = new_record("b.jpg", "0012", "rafau", "test", aus={"1": 0, "2": 0, "12": 1},
                   emotions=["happiness"])
    b["caption"] = ["It is a people who pulls lip corner."]
    c = new_record("c.jpg", "0100", "rafau", "test", aus={"1": 0, "2": 0, "12": 0})
    return [a, b, c]


def test_missing_ids_error_or_counted_skip():
    preds = [{"image_id": "0007", "caption": "brows raised"},
             {"image_id": "7", "caption": "brows raised"}]
    with pytest.raises(EvaluationError, match=r"1 of 2 image ids are not in the ground truth.*'7'"):
        evaluate_captions(preds, gt_records(), meteor=False)
    out = evaluate_captions(preds, gt_records(), meteor=False, skip_missing=True)
    assert out["n_skipped_missing_in_ground_truth"] == 1
    assert out["n_scored"] == 1
    assert out["per_sample"][0]["image_id"] == "0007"  # the string id, zeros kept
    assert out["n_ground_truth_not_predicted"] == 2


def test_bad_prediction_items_and_duplicates():
    with pytest.raises(EvaluationError, match=r"predictions\[0\].*'image_id' and 'caption'"):
        evaluate_captions([{"id": "0007"}], gt_records(), meteor=False)
    dup = [{"image_id": "0007", "caption": "a"}, {"image_id": "0007", "caption": "b"}]
    with pytest.raises(EvaluationError, match="more than once"):
        evaluate_captions(dup, gt_records(), meteor=False)


def test_empty_caption_and_record_without_reference_are_counted():
    preds = [{"image_id": "0007", "caption": ""}, {"image_id": "0012", "caption": "a smile"},
             {"image_id": "0100", "caption": "lips part"}]
    out = evaluate_captions(preds, gt_records(), meteor=False)
    assert out["n_empty_predictions"] == 1
    assert out["n_without_reference"] == 1  # 0100 has no reference caption
    by_id = {s["image_id"]: s for s in out["per_sample"]}
    assert by_id["0007"]["rouge_l"] == 0.0
    assert "rouge_l" not in by_id["0100"]  # recognition only
    assert by_id["0012"]["aus_mentioned"] == [12]
    assert out["metrics"]["rouge_l"] == pytest.approx(
        (0.0 + by_id["0012"]["rouge_l"]) / 2)


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    save_records(gt_records(), tmp_path / "gt.json")
    preds = [{"image_id": "0007", "caption": "The inner brows are raised."},
             {"image_id": "0012", "caption": "A happy face that smiles."}]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "gt.json"), "--out", str(out), "--encoder", "none",
                 "--no-meteor", "--name", "AU-BLIP"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| model | METEOR | ROUGE-L |" in printed and "| AU-BLIP |" in printed
    assert "| AU1 | AU2 | AU12 | avg |" in printed
    saved = json.loads(out.read_text())["AU-BLIP"]
    assert saved["recognition"]["au_f1"]["12"] == 1.0
    assert saved["metrics"]["emotion_accuracy"] == 1.0
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": "nope", "caption": "x"}]))
    code = main(["evaluate", "--pred", str(tmp_path / "bad.json"), "--ann",
                 str(tmp_path / "gt.json"), "--encoder", "none", "--no-meteor"])
    assert code == 2
    assert "not in the ground truth" in capsys.readouterr().err
    code = main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "missing.json"), "--encoder", "none", "--no-meteor"])
    assert code == 2 and "records file not found" in capsys.readouterr().err


def test_per_au_table_leaves_out_rows_without_au_labels():
    from lavis_ext.metrics.evaluate import format_table

    au_only = evaluate_captions([{"image_id": "0007", "caption": "The inner brows are raised."}],
                                gt_records()[:1], meteor=False)
    emotions = [new_record("e.jpg", "e1", "affectnet", "test", emotions=["anger"])]
    emotions[0]["caption"] = ["The face shows anger."]
    emotion_only = evaluate_captions([{"image_id": "e1", "caption": "The face shows anger."}],
                                     emotions, meteor=False)
    table = format_table({"AU model": au_only, "Emotion model": emotion_only})
    main_rows, per_au = table.split("AU F1 (%) read from the captions:")
    assert "| Emotion model |" in main_rows and "| AU model |" in per_au
    assert "Emotion model" not in per_au


def test_facial_r1_protocol_scores_rouge_l_as_its_code_does():
    """Facial-R1's ROUGE-L: rouge_score's rougeL F1 (beta 1) on stemmed words, best reference.

    "the man is smiling" against "a man smiles": stemmed, the LCS is "man smile" (2 words),
    P = 2/4, R = 2/3, F1 = 4/7. pycocoevalcap's ROUGE-L (no stemming, beta 1.2) sees only "man".
    """
    record = new_record("a.jpg", "x1", "fea20k", "test", aus={"12": 1})
    record["caption"] = ["the face is neutral", "a man smiles"]
    out = evaluate_captions([{"image_id": "x1", "caption": "the man is smiling"}], [record],
                            meteor=False, protocol="facial-r1")
    assert out["metrics"]["rouge_l"] == pytest.approx(4 / 7)
    assert "rouge_score" in out["rouge_l_definition"] and out["protocol"] == "facial-r1"
    assert out["recognition"]["au_f1_macro"] == pytest.approx(1.0)  # "smiling" names AU12
    with pytest.raises(Exception, match="expected one of"):
        evaluate_captions([{"image_id": "x1", "caption": "a"}], [record], meteor=False,
                          protocol="rouge")
