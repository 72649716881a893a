from lavis_ext.captions import rules
from lavis_ext.captions.validate import au_codes, emotion_words
from lavis_ext.facs import ACTION_UNITS, third_person


def test_au_caption_follows_paper_template_with_third_person_verbs():
    assert rules.au_caption([12, 6]) == "It is a people who raises cheek and pulls lip corner."
    text = rules.au_caption([20, 24, 43, 1])
    assert text == ("It is a people who raises inner eyebrow, stretches lips, presses lips "
                    "and closes eyes.")


def test_every_au_has_a_rule_phrase():
    text = rules.au_caption(list(ACTION_UNITS))
    for au in ACTION_UNITS.values():
        assert third_person(au.verb) in text


def test_no_au_gives_no_rule_caption_and_a_fixed_neutral_description():
    assert rules.au_caption([]) is None
    neutral = rules.neutral_au_caption()
    assert "eyes" in neutral and "mouth" in neutral and "brows" in neutral
    assert not au_codes(neutral) and not emotion_words(neutral)
    # evaluate reads it back as no AU and no emotion (it once read as AU25, lips part)
    from lavis_ext.metrics.recognition import parse_caption

    parsed = parse_caption(neutral)
    assert parsed.aus == set() and parsed.emotions == set(), parsed
    assert rules.neutral_au_caption() == neutral


def test_template_and_intensity_are_configurable():
    assert rules.au_caption([4], template="The person {actions}.") == "The person lowers brow."
    assert rules.au_caption([4, 9], intensities={4: 2, 9: 5}) == (
        "It is a people who slightly lowers brow and extremely wrinkles nose.")


def test_emotion_caption_merges_labels():
    assert rules.emotion_caption(["happiness", "surprise"]) == (
        "The face shows happiness and surprise.")
    assert rules.emotion_caption(["Happy", "happiness", "fear", "anger"]) == (
        "The face shows happiness, fear and anger.")
    assert rules.emotion_caption(["neutral"]) == "The face shows a neutral expression."
    assert rules.emotion_caption(["tired"]) == "The face shows tired."
    assert rules.emotion_caption([]) is None


def test_concat_caption_for_cat_blip():
    au = rules.au_caption([6, 12])
    emo = rules.emotion_caption(["happiness"])
    assert rules.concat_caption(au, emo) == f"{au} {emo}"
    assert rules.concat_caption("It is a people who raises cheek", emo).startswith(
        "It is a people who raises cheek. The face")
