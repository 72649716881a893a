import pytest

from lavis_ext.captions import prompts
from lavis_ext.facs import ACTION_UNITS


def test_au_prompt_is_one_shot_with_definitions_and_restrictions():
    messages = prompts.au_messages([12, 1])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    for number, au in ACTION_UNITS.items():
        assert f"AU{number}: {au.noun}" in system
    assert "emotion" in system and '"AU"' in system
    assert messages[-1]["content"] == ("Action units present: AU1 (inner brow raiser), "
                                       "AU12 (lip corner puller).")
    with pytest.raises(ValueError):
        prompts.au_messages([])


def test_fusion_prompt_carries_both_captions_on_one_line_each():
    messages = prompts.fusion_messages("The brows\nrise.", "The face shows fear.")
    question = messages[-1]["content"]
    assert "Facial actions: The brows rise." in question
    assert "Emotion: The face shows fear." in question


def test_prompt_dir_override(tmp_path):
    (tmp_path / "fusion.yaml").write_text("system: S\nquestion: 'A={au_caption} E={emotion_caption}'\n")
    messages = prompts.fusion_messages("a", "b", prompt_dir=tmp_path)
    assert messages == [{"role": "system", "content": "S"},
                        {"role": "user", "content": "A=a E=b"}]
    (tmp_path / "au_caption.yaml").write_text("system: x\n")
    with pytest.raises(KeyError, match="example_question"):
        prompts.au_messages([1], prompt_dir=tmp_path)
