import pytest

from lavis_ext.captions import prompts
from lavis_ext.facs import ACTION_UNITS


def test_concise_au_prompt_is_one_shot_with_definitions_and_restrictions():
    messages = prompts.au_messages([12, 1], prompts.PromptChoice("concise"))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    for number, au in ACTION_UNITS.items():
        assert f"AU{number}: {au.noun}" in system
    assert "emotion" in system and '"AU"' in system
    assert messages[-1]["content"] == ("Action units present: AU1 (inner brow raiser), "
                                       "AU12 (lip corner puller).")
    with pytest.raises(ValueError):
        prompts.au_messages([])


def test_paper_au_prompt_follows_fig_2():
    """Default set: expert role, 27 definitions, one example whose question names codes and a
    range of sentences and forbids emotions and the word "AU"; a one-sentence answer; the real
    question in the same form."""
    messages = prompts.au_messages([26, 1, 2])
    assert messages == prompts.au_messages([1, 2, 26], prompts.PromptChoice("paper"))
    system, example, answer, question = (m["content"] for m in messages)
    assert "expert" in system and len(system.splitlines()) >= 27
    assert all(f"AU{n}: {au.noun}" in system for n, au in ACTION_UNITS.items())
    for text in (example, question):
        assert "1~3 sentences" in text and "emotion" in text and '"AU"' in text
    assert "AU1, AU2 and AU26" in question and "(" not in question  # codes only
    assert answer.count(".") == 1 and "AU" not in answer
    assert question.replace("AU1, AU2 and AU26", "X") == example.replace(
        example.split("shows ")[1].split(".")[0], "X")  # the same form as the example


def test_fusion_prompts_carry_both_captions_on_one_line_each():
    for choice in (None, prompts.PromptChoice("concise")):
        messages = prompts.fusion_messages("The brows\nrise.", "The face shows fear.", choice)
        question = messages[-1]["content"]
        assert "Facial actions: The brows rise." in question
        assert "Emotion: The face shows fear." in question
    paper = prompts.fusion_messages("a", "b")  # Fig. 4: zero-shot, no sentence cap
    assert [m["role"] for m in paper] == ["user"]
    assert "each emotion follows from the corresponding facial" in paper[0]["content"]
    assert "sentence" not in paper[0]["content"].split("Facial actions:")[0].replace(
        "description", "")
    concise = prompts.fusion_messages("a", "b", prompts.PromptChoice("concise"))
    assert "two or three sentences" in concise[-1]["content"]


def test_own_prompt_files_pass_the_same_checks(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("system: 'Definitions: {definitions}'\nexample_question: 'AU4?'\n"
                    "example_answer: The brows are drawn down.\nquestion: 'Now {au_codes}.'\n")
    messages = prompts.au_messages([4], prompts.PromptChoice(au_prompt=str(good)))
    assert messages[-1]["content"] == "Now AU4."
    bad_cases = {
        "example_answer: The person looks angry.": "breaks the answer rules",
        "example_answer: Raises AU4 strongly.": "breaks the answer rules",
        "question: 'Now {aus} {colour}.'": "unknown placeholder",
        "question: 'Now.'": "must name the AUs",
        "system: 'no definitions'": "must contain {definitions}",
        "question: 'In {sentences} sentences: {aus}'": "set 'sentences'",
    }
    base = dict(line.split(": ", 1) for line in good.read_text().splitlines())
    for i, (line, message) in enumerate(bad_cases.items()):
        key, value = line.split(": ", 1)
        file = tmp_path / f"bad{i}.yaml"
        file.write_text("\n".join(f"{k}: {value if k == key else v}" for k, v in base.items()))
        with pytest.raises(ValueError, match=message):
            prompts.au_messages([4], prompts.PromptChoice(au_prompt=str(file)))
    with pytest.raises(ValueError, match="unknown prompt set 'gpt'"):
        prompts.au_messages([4], prompts.PromptChoice("gpt"))


def test_prompt_dir_override(tmp_path):
    (tmp_path / "fusion.yaml").write_text("system: S\nquestion: 'A={au_caption} E={emotion_caption}'\n")
    messages = prompts.fusion_messages("a", "b", tmp_path)
    assert messages == [{"role": "system", "content": "S"},
                        {"role": "user", "content": "A=a E=b"}]
    (tmp_path / "au_caption.yaml").write_text("system: x\nquestion: '{aus}'\n")
    with pytest.raises(KeyError, match="example_question"):
        prompts.au_messages([1], tmp_path)
