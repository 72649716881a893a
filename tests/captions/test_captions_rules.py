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


def test_intensity_degree_words_follow_facs_a_to_e():
    text = rules.au_caption([4, 9, 12], intensities={4: 1, 9: 5, 12: 3}, style="degree")
    assert text == ("It is a people who lowers brow with trace intensity, wrinkles nose with "
                    "maximum intensity and pulls lip corner with marked intensity.")
    # an AU without a level (0 or missing) is said plainly
    assert rules.au_caption([6, 12], intensities={12: 2}, style="degree") == (
        "It is a people who raises cheek and pulls lip corner with slight intensity.")
    import pytest

    from lavis_ext.errors import InputError
    with pytest.raises(InputError, match="expected one of"):
        rules.au_caption([6], intensities={6: 2}, style="loud")


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


def test_faceme_second_template_from_the_label_groups(tmp_path):
    """A FaceME label CSV (the documented layout) through the reader and emotion-rule: images
    with action labels get the paper's second template (Fig. 5), the others the first."""
    import csv

    from lavis_ext.captions.engine import synthesize_records
    from lavis_ext.data.readers import READERS, SkipReport

    header = ["image", "annotator", "actions/frowning", "actions/Crying", "emotions/unhappiness",
              "emotions/grief", "emotions/sad", "emotions/happy"]
    rows = [header]
    for annotator in "abc":  # image 1: two actions and three other labels, all 3 votes
        rows.append(["images/1.jpg", annotator, "1", "1", "1", "1", "1", "0"])
    rows += [["images/2.jpg", "a", "0", "0", "0", "0", "0", "1"],  # emotions only
             ["images/2.jpg", "b", "0", "0", "0", "0", "0", "1"],
             ["images/3.jpg", "a", "1", "0", "0", "0", "0", "0"],  # an action only
             ["images/3.jpg", "b", "1", "0", "0", "0", "0", "0"]]
    with (tmp_path / "faceme_labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    records = READERS["faceme"].read(tmp_path, SkipReport("faceme"))
    summary = synthesize_records(records, "emotion-rule", progress=False)
    assert summary.added == 3
    caption = {r["image_id"]: r["captions"]["emotion-rule"][0] for r in records}
    assert caption["images_1"] == ("The people is frowning and crying. The actions on the face "
                                   "show unhappiness, grief and sadness.")
    assert caption["images_2"] == "The face shows happiness."
    assert caption["images_3"] == "The people is frowning."
    # a --template given by the user applies to every image, FaceME's included
    again = READERS["faceme"].read(tmp_path, SkipReport("faceme"))
    synthesize_records(again, "emotion-rule", template="They look {emotions}.", progress=False)
    assert again[0]["captions"]["emotion-rule"][0].startswith("They look frowning")


def test_faceme_template_missing_from_a_custom_rules_file_is_a_clear_error(tmp_path):
    import pytest

    (tmp_path / "rules.yaml").write_text('au_template: "It is a people who {actions}."\n'
                                         'emotion_template: "The face shows {emotions}."\n')
    labels = {"actions": ["talking"], "health status": ["tired"]}
    assert rules.faceme_caption({"health status": ["tired"]}, prompt_dir=tmp_path) == \
        "The face shows tired."
    with pytest.raises(KeyError, match="has no 'faceme_actions_template' entry"):
        rules.faceme_caption(labels, prompt_dir=tmp_path)
