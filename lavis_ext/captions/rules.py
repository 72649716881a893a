"""Rule-based captions: AU captions from the paper's template, emotion captions, Cat-BLIP joins.

Templates come from ``prompts/rules.yaml``; words come from :mod:`lavis_ext.facs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lavis_ext.errors import InputError, MissingEntryError
from lavis_ext.facs import (BASIC_EMOTIONS, DEGREE_SUFFIX, INTENSITY_ADVERBS, au_name,
                            canonical_emotion, check_intensity_style, degree_word, join_words,
                            third_person)
from lavis_ext.captions.prompts import load_prompt, prompt_file


def _rules(prompt_dir: str | Path | None) -> dict:
    return load_prompt("rules", prompt_dir)


def au_actions(aus: Iterable[int], intensities: Mapping[int, int] | None = None,
               style: str = "adverb") -> str:
    """The verb phrases of the AUs, conjugated and joined ("raises cheek and pulls lip corner").

    With ``intensities`` (0-5 per AU, e.g. from DISFA or BP4D), each action says its level:
    style ``adverb`` puts an adverb before it ("slightly raises cheek"), style ``degree`` the
    FACS A-E word after it ("raises cheek with slight intensity").
    """
    style = check_intensity_style(style, "intensity style") or "adverb"
    phrases = []
    for number in sorted(set(int(a) for a in aus)):
        phrase = third_person(au_name(number).verb)
        level = (intensities or {}).get(number)
        if level and style == "degree":
            phrase = f"{phrase} with {degree_word(int(level))} {DEGREE_SUFFIX}"
        elif level:
            phrase = f"{INTENSITY_ADVERBS[int(level)]} {phrase}"
        phrases.append(phrase)
    return join_words(phrases)


def au_caption(aus: list[int], *, template: str | None = None,
               intensities: Mapping[int, int] | None = None, style: str = "adverb",
               prompt_dir: str | Path | None = None) -> str | None:
    """The paper's rule-based AU caption; None when no AU is present (the paper gives none)."""
    if not aus:
        return None
    return _fill(template, "au_template", prompt_dir,
                 actions=au_actions(aus, intensities, style))


def neutral_au_caption(prompt_dir: str | Path | None = None) -> str:
    """The fixed description used for faces whose AU labels say no AU is present."""
    return " ".join(_template("neutral_au", prompt_dir).split())


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
    return _fill(template, "emotion_template", prompt_dir, emotions=phrase)


def _template(key: str, prompt_dir: str | Path | None) -> str:
    table = _rules(prompt_dir)
    if not isinstance(table.get(key), str) or not table[key].strip():
        raise MissingEntryError(f"{prompt_file('rules', prompt_dir)} has no '{key}' entry "
                                f"(a template)")
    return table[key]


def _fill(template: str | None, key: str, prompt_dir: str | Path | None, **values: str) -> str:
    """``template`` (a --template), else the rules file's ``key``, filled with ``values``."""
    text = template or _template(key, prompt_dir)
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        where = "--template" if template else f"{prompt_file('rules', prompt_dir)}: '{key}'"
        raise InputError(f"{where}: cannot fill {text!r} ({type(err).__name__}: {err}); its "
                         f"placeholders can be {sorted('{' + v + '}' for v in values)}, and a "
                         f"literal brace is written {{{{ or }}}}") from None


def is_action_group(group: str | None) -> bool:
    """FaceME's "actions" label group (as the CSV header names it, any case)."""
    return (group or "").strip().lower() in ("action", "actions")


def _faceme_word(label: str) -> str:
    """A FaceME label inside its caption: lowercased; a basic emotion's adjective becomes its
    noun ("sad" -> "sadness"), but near-synonyms stay apart ("grief" and "sadness" both appear
    in the paper's Fig. 5 caption)."""
    word = " ".join(str(label).lower().replace("_", " ").split())
    for emotion in BASIC_EMOTIONS.values():
        if word == emotion.adjective:
            return emotion.name
    return word


def faceme_caption(labels: Mapping[str, Sequence[str]], *,
                   prompt_dir: str | Path | None = None) -> str | None:
    """FaceME's caption from its labels by group (``meta.labels``): with action labels, the
    paper's second template (what the person does, then what those actions show); without,
    the emotion caption of all labels. None when there is no label."""
    actions: list[str] = []
    others: list[str] = []
    for group, names in labels.items():
        for name in names:
            bucket = actions if is_action_group(group) else others
            word = _faceme_word(name)
            if word and word not in bucket:
                bucket.append(word)
    if not actions:
        return emotion_caption(others, prompt_dir=prompt_dir)
    text = _fill(None, "faceme_actions_template", prompt_dir, actions=join_words(actions))
    written = _rules(prompt_dir).get("emotion_phrases") or {}
    phrase = join_words(written.get(w, w) for w in others)
    if phrase:
        text += " " + _fill(None, "faceme_emotions_template", prompt_dir, emotions=phrase)
    return text


def concat_caption(au_caption: str, emotion_caption: str, *,
                   prompt_dir: str | Path | None = None) -> str:
    """Cat-BLIP baseline text: the AU caption followed by the emotion caption, no LLM."""
    au_text, emo_text = au_caption.strip(), emotion_caption.strip()
    if not au_text or not emo_text:
        return au_text or emo_text
    if au_text[-1] not in ".!?":
        au_text += "."
    return _fill(None, "concat_template", prompt_dir, au_caption=au_text,
                 emotion_caption=emo_text)
