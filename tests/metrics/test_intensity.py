"""AU intensity: read back from captions, PCC against au_intensity, beside AU F1 in evaluate."""
import json

import pytest

from lavis_ext.captions import rules
from lavis_ext.captions.engine import synthesize_records
from lavis_ext.cli import main
from lavis_ext.data.records import new_record, save_records
from lavis_ext.errors import InputError
from lavis_ext.facs import INTENSITY_ADVERBS, INTENSITY_WORDS, intensity_from_word
from lavis_ext.metrics.evaluate import evaluate_captions
from lavis_ext.metrics.recognition import caption_intensities, intensity_scores, pearson


def test_level_words_round_trip_in_both_styles():
    levels = {1: 1, 4: 2, 9: 3, 12: 4, 26: 5}
    for style in ("adverb", "degree"):
        text = rules.au_caption(list(levels), intensities=levels, style=style)
        assert caption_intensities(text) == levels, text
    assert [intensity_from_word(INTENSITY_WORDS[k]) for k in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [intensity_from_word(INTENSITY_ADVERBS[k]) for k in range(1, 6)] == [1, 2, 3, 4, 5]
    assert intensity_from_word("absent") is None and intensity_from_word("lip") is None


def test_level_words_outside_an_au_mention_or_negated_give_nothing():
    assert caption_intensities("The mouth is slightly open.") == {}  # part of AU25's phrase
    assert caption_intensities("Raises cheek, marked.") == {}  # another clause
    assert caption_intensities("No smile with marked intensity; lowers brow slightly.") == {4: 2}


def test_pearson_and_undefined_cases():
    assert pearson([0, 1, 2], [0, 2, 4]) == pytest.approx(1.0)
    assert pearson([0, 1, 2], [2, 1, 0]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [0, 1, 2]) is None and pearson([1], [1]) is None


def _intensity_records():
    out = []
    for i, (cheek, smile) in enumerate([(0, 0), (1, 2), (3, 3), (5, 4), (2, None)]):
        record = new_record(f"{i}.jpg", f"f{i}", "disfa", "test",
                            aus={"6": int(cheek >= 2), "12": None if smile is None
                                 else int(smile >= 2)})
        record["au_intensity"] = {"6": cheek, "12": smile}
        record["caption"] = ["reference"]
        out.append(record)
    return out


def test_intensity_scores_pairs_zeros_and_unreadable_levels():
    records = _intensity_records()
    perfect = [rules.au_caption([au for au, v in ((6, r["au_intensity"]["6"]),
                                                  (12, r["au_intensity"]["12"])) if v],
                                intensities={6: r["au_intensity"]["6"],
                                             12: r["au_intensity"]["12"] or 0},
                                style="degree") or "A calm face." for r in records]
    scores = intensity_scores(perfect, records)
    assert scores["pcc"]["6"] == pytest.approx(1.0) and scores["pcc"]["12"] == pytest.approx(1.0)
    assert scores["n_pairs"] == {"6": 5, "12": 4}  # null is not a pair
    plain = [rules.au_caption([6]), "A calm face.", "A calm face.", "A calm face.", ""]
    scores = intensity_scores(plain, records)
    assert scores["n_named_without_level"] == 1 and scores["n_pairs"]["6"] == 4
    assert scores["pcc"]["12"] is None  # the captions say 0 throughout: undefined
    assert intensity_scores(["x"], [new_record("a.jpg", "a", "rafau", "test")]) is None


def test_evaluate_reports_pcc_beside_au_f1_only_with_intensity_references(tmp_path, capsys):
    records = _intensity_records()
    synthesize_records(records, "au-rule", intensity="degree", progress=False)
    preds = [{"image_id": r["image_id"], "caption": (r["captions"].get("au-rule") or [""])[0]}
             for r in records]
    out = evaluate_captions(preds, records, meteor=False)
    # au-rule names the AUs present by occurrence (DISFA: level >= 2), so AU6 at level 1
    # is not said and reads 0; AU12's levels are all said
    expected = (pearson([0, 1, 3, 5, 2], [0, 0, 3, 5, 2]) + 1.0) / 2
    assert out["metrics"]["au_intensity_pcc"] == pytest.approx(expected)
    assert out["recognition"]["au_intensity"]["pcc"]["12"] == pytest.approx(1.0)
    assert out["metrics"]["au_f1_macro"] == pytest.approx(1.0)
    for r in records:
        del r["au_intensity"]
    out = evaluate_captions(preds, records, meteor=False)
    assert "au_intensity_pcc" not in out["metrics"] and "au_intensity" not in out["recognition"]
    records = _intensity_records()
    save_records(records, tmp_path / "gt.json")
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    assert main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "gt.json"), "--encoder", "none", "--no-meteor"]) == 0
    printed = capsys.readouterr().out
    assert "AU intensity PCC read from the captions" in printed
    assert f"| {expected:.3f} |" in printed


def test_synthesize_intensity_option_flag_and_errors(tmp_path, capsys):
    records = _intensity_records()
    save_records(records, tmp_path / "in.json")
    assert main(["synthesize", "--kind", "au-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(tmp_path / "deg.json"), "--intensity", "degree",
                 "--no-progress"]) == 0
    assert main(["synthesize", "--kind", "au-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(tmp_path / "off.json"), "--no-progress"]) == 0
    deg = json.loads((tmp_path / "deg.json").read_text())
    off = json.loads((tmp_path / "off.json").read_text())
    assert deg[3]["captions"]["au-rule"] == [
        "It is a people who raises cheek with maximum intensity and pulls lip corner with "
        "severe intensity."]
    assert off[3]["captions"]["au-rule"] == [rules.au_caption([6, 12])]  # default: no level
    with pytest.raises(InputError, match="expected one of"):
        synthesize_records(records, "au-rule", intensity="loud", progress=False)
