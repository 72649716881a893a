import pytest

from lavis_ext.captions.validate import tidy, validate_answer

GOOD = "The inner brows are lifted and the lip corners are pulled up at the sides."


def test_good_answer_passes_and_is_tidied():
    verdict = validate_answer(f'  Answer: "{GOOD}"\n', "au-llm")
    assert verdict.ok and verdict.text == GOOD


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), (None, "empty"), ("   ", "empty"), ("Lips part.", "too short"),
    ("The person shows AU 12 with lifted cheeks and parted lips.", "AU code"),
    ("The person activates AU12 and raises the inner brows slightly.", "AU code"),
    ("Several AUs are active: the brows rise and the lips part widely.", "AU code"),
    ("Action unit 4 lowers the brows and tightens the area around them.", "AU code"),
    ("The cheeks rise and the lip corners pull up, a happy face overall.", "emotion"),
    ("The brows are drawn together as if the person were furious at someone.", "emotion"),
])
def test_bad_au_answers_are_rejected(text, reason):
    verdict = validate_answer(text, "au-llm")
    assert not verdict.ok and reason in verdict.reason


def test_length_bounds_and_neutral_position():
    assert not validate_answer("word " * 200, "au-llm", max_chars=300).ok
    assert validate_answer("The brows rest in a neutral position and the lips are closed.",
                           "au-llm").ok
    assert not validate_answer("The face has a neutral expression with closed lips.",
                               "au-llm").ok


def test_fusion_may_name_emotions_but_not_au_codes():
    text = "The cheeks rise and the lip corners are pulled up, which shows happiness."
    assert validate_answer(text, "fuse").ok
    assert not validate_answer(text + " This is AU 6.", "fuse").ok


def test_tidy_joins_lines():
    assert tidy("A: one\n two") == "one two"
