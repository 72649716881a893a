"""Reading AUs and emotions back from captions, and the recognition scores."""
import pytest

from lavis_ext import facs
from lavis_ext.metrics.recognition import parse_caption, recognition_scores


@pytest.mark.parametrize("number", facs.AU_NUMBERS)
def test_every_au_is_read_from_its_rule_and_noun_forms(number):
    au = facs.ACTION_UNITS[number]
    rule = f"It is a people who {facs.third_person(au.verb)}."
    assert number in parse_caption(rule).aus
    assert number in parse_caption(f"The {au.noun} is visible").aus
    for synonym in au.synonyms:
        assert number in parse_caption(synonym).aus, synonym


@pytest.mark.parametrize("caption, present, negated", [
    ("It is a people who raises inner eyebrow, raises outer eyebrow and pulls lip corner.",
     {1, 2, 12}, set()),
    ("The brows are not raised.", set(), {1, 2}),
    ("No smile; the lips are pressed together.", {24}, {12}),
    ("The person frowns without wrinkling the nose or raising the upper lip.", {4},
     {9, 10}),
    ("The inner brows aren't raised and the person is smiling.", {12}, {1}),
    ("The left lip corner is pulled up.", {12}, set()),
    ("She slightly raises the right inner eyebrow.", {1}, set()),
    ("The eyebrows lift and the eyelids are tightened.", {1, 2, 7}, set()),
    ("Raises inner and outer eyebrows and drops the jaw.", {1, 2, 26}, set()),
    ("Raises the cheeks and lowers the brows.", {4, 6}, set()),
    ("The lip corners are pulled down.", {15}, set()),  # not AU12
    ("Active units: AU12, AU 6 and au25 but not AU4.", {6, 12, 25}, {4}),
    ("Furrowed brow and narrowed eyes", {4, 7}, set()),
    ("The corners of her lips are pulled downwards.", {15}, set()),
    ("The person neither smiles nor frowns.", set(), {4, 12}),
    ("Although she smiles, her brows are lowered.", {4, 12}, set()),
])
def test_tricky_captions(caption, present, negated):
    parsed = parse_caption(caption)
    assert parsed.aus == present, parsed.mentions
    assert parsed.negated_aus == negated, parsed.mentions


@pytest.mark.parametrize("caption, present, negated", [
    ("The face shows happiness and surprise.", {"happiness", "surprise"}, set()),
    ("A sad looking person, not happy at all.", {"sadness"}, {"happiness"}),
    ("She looks scared; he made a face.", {"fear"}, set()),  # 'made' is not 'mad'
    ("There is no sign of anger or disgust.", set(), {"anger", "disgust"}),
    ("The face is angry-looking and contemptuous", {"anger", "contempt"}, set()),
    ("Brows rest in a neutral position; the face looks calm.", {"neutral"}, set()),
    ("Brows rest in a neutral position.", set(), set()),
])
def test_emotions(caption, present, negated):
    parsed = parse_caption(caption)
    assert parsed.emotions == present
    assert parsed.negated_emotions == negated


def record(aus, emotions=()):
    return {"image_id": "x", "aus": aus, "emotions": list(emotions), "caption": []}


def test_recognition_scores_by_hand():
    captions = ["raises inner eyebrow and smiles", "smiles happily", "lowers the brows",
                "no smile, the face shows happiness", ""]
    records = [record({"1": 1, "12": 1, "4": 0}), record({"1": 0, "12": 1, "4": None},
                                                         ["happiness"]),
               record({"1": 1, "12": 0, "4": 1}, ["anger"]),
               record({"1": 0, "12": 1, "4": 0}, ["happiness"]),
               record({"1": None, "12": 0, "4": 0}, ["faceme-thinking"])]
    out = recognition_scores(captions, records)
    # AU1: tp1 fn1 -> 2/3; AU12: tp2 fn1 -> 4/5; AU4: tp1 -> 1.0 (null skipped).
    assert out["au_f1"] == {"1": pytest.approx(2 / 3), "4": pytest.approx(1.0),
                            "12": pytest.approx(0.8)}
    assert out["au_f1_macro"] == pytest.approx((2 / 3 + 1 + 0.8) / 3)
    # Emotions: rec1 exact, rec2 none said, rec3 exact; rec4 unknown label is left out.
    assert out["n_emotion_records"] == 3
    assert out["emotion_accuracy"] == pytest.approx(2 / 3)
    assert out["n_captions_without_emotion"] == 1
    assert out["n_records_with_unknown_emotion_labels"] == 1
    assert recognition_scores(captions, records, au_subset=[12])["au_f1"].keys() == {"12"}
    with pytest.raises(ValueError, match="captions but"):
        recognition_scores(captions[:2], records)
