"""Rule-based captions: AU captions from the paper's template, emotion captions, Cat-BLIP joins.

Templates come from ``prompts/rules.yaml``; words come from :mod:`lavis_ext.facs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from lavis_ext.facs import INTENSITY_ADVERBS, au_name, canonical_emotion, join_words, third_person
from lavis_ext.captions.prompts import load_prompt


def _rules(prompt_dir: str | Path | None) -> dict:
    return load_prompt("rules", prompt_dir)


def au_actions(aus: Iterable[int], intensities: Mapping[int, int] | None = None) -> str:
    """The verb phrases of the AUs, conjugated and joined ("raises cheek and pulls lip corner").

    With ``intensities`` (0-5 per AU, e.g. from DISFA), each action gets its adverb
    ("slightly raises cheek").
    """
    phrases = []
    for number in sorted(set(int(a) for a in aus)):
        phrase = third_person(au_name(number).verb)
        level = (intensities or {}).get(number)
        if level:
            phrase = f"{INTENSITY_ADVERBS[int(level)]} {phrase}"
        phrases.append(phrase)
    return join_words(phrases)


def au_caption(aus: list[int], *, template: str | None = None,
               intensities: Mapping[int, int] | None = None,
               prompt_dir: str | Path | None = None) -> str | None:
    """The paper's rule-based AU caption; None when no AU is present (the paper gives none)."""
    if not aus:
        return None
    template = template or _rules(prompt_dir)["au_template"]
    return template.format(actions=au_actions(aus, intensities))


def neutral_au_caption(prompt_dir: str | Path | None = None) -> str:
    """The fixed description used for faces whose AU labels say no AU is present."""
    return " ".join(str(_rules(prompt_dir)["neutral_au"]).split())


def emotion_phrase(emotions: Iterable[str], prompt_dir: str | Path | None = None) -> str:
    """Merge emotion labels into one phrase ("happiness and surprise"), duplicates dropped."""
    phrases = _rules(prompt_dir).get("emotion_phrases") or {}
    names: list[str] = []
    for label in emotions:
        name = canonical_emotion(label)
        if name and name not in names:
            names.append(name)
    return join_words(phrases.get(n, n) for n in names)


def emotion_caption(emotions: list[str], *, template: str | None = None,
                    prompt_dir: str | Path | None = None) -> str | None:
    """"The face shows <emotions>." for one or several labels; None when there is none."""
    phrase = emotion_phrase(emotions, prompt_dir)
    if not phrase:
        return None
    return (template or _rules(prompt_dir)["emotion_template"]).format(emotions=phrase)


def concat_caption(au_caption: str, emotion_caption: str, *,
                   prompt_dir: str | Path | None = None) -> str:
    """Cat-BLIP baseline text: the AU caption followed by the emotion caption, no LLM."""
    au_text, emo_text = au_caption.strip(), emotion_caption.strip()
    if not au_text or not emo_text:
        return au_text or emo_text
    if au_text[-1] not in ".!?":
        au_text += "."
    return _rules(prompt_dir)["concat_template"].format(au_caption=au_text,
                                                       emotion_caption=emo_text)
