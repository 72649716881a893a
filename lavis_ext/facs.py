"""The one home of the FACS action-unit and emotion vocabulary.

Every other module (readers, caption rules, prompts, the caption parser, the synthetic face
generator) takes its words from here, so a wording change happens in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from lavis_ext.errors import InputError, MissingEntryError


@dataclass(frozen=True)
class ActionUnit:
    number: int
    noun: str  # FACS name, used in LLM prompts ("inner brow raiser")
    verb: str  # base verb phrase, conjugated for rule captions ("raise inner eyebrow")
    region: str  # face region, for grouping and the synthetic face generator
    synonyms: tuple[str, ...] = field(default=())  # extra phrases the caption parser accepts


# The 27 AUs of the paper (noun and verb forms from its supplementary table).
ACTION_UNITS: dict[int, ActionUnit] = {
    au.number: au
    for au in [
        ActionUnit(1, "inner brow raiser", "raise inner eyebrow", "brow",
                   ("inner brows raised", "inner eyebrows raised", "raised inner brows",
                    "raises the inner brows", "inner corners of the eyebrows lift")),
        ActionUnit(2, "outer brow raiser", "raise outer eyebrow", "brow",
                   ("outer brows raised", "outer eyebrows raised", "raised outer brows",
                    "raises the outer brows")),
        ActionUnit(4, "brow lowerer", "lower brow", "brow",
                   ("lowered brows", "brows lowered", "furrowed brow", "frowning brow",
                    "knitted brows", "brows drawn together", "lowers the brows", "frown")),
        ActionUnit(5, "upper lid raiser", "raise upper lid", "eye",
                   ("upper eyelids raised", "raised upper lids", "eyes wide open",
                    "widened eyes", "raises the upper eyelids")),
        ActionUnit(6, "cheek raiser", "raise cheek", "cheek",
                   ("raised cheeks", "cheeks raised", "raises the cheeks", "cheeks lifted")),
        ActionUnit(7, "lid tightener", "tighten lids", "eye",
                   ("tightened eyelids", "tightened lids", "narrowed eyes", "squinting",
                    "tightens the eyelids")),
        ActionUnit(8, "lips toward each other", "pull lips toward each other", "mouth", ()),
        ActionUnit(9, "nose wrinkler", "wrinkle nose", "nose",
                   ("wrinkled nose", "nose wrinkled", "wrinkles the nose")),
        ActionUnit(10, "upper lip raiser", "raise upper lip", "mouth",
                   ("raised upper lip", "upper lip raised", "raises the upper lip")),
        ActionUnit(11, "nasolabial deepener", "deepen nasolabial", "cheek",
                   ("deepened nasolabial fold", "nasolabial furrow deepened")),
        ActionUnit(12, "lip corner puller", "pull lip corner", "mouth",
                   ("smile", "smiling", "smiles", "lip corners pulled up",
                    "corners of the mouth raised", "pulls the lip corners")),
        ActionUnit(14, "dimpler", "tighten lip corner", "mouth",
                   ("dimples", "dimpled cheeks", "tightened lip corners")),
        ActionUnit(15, "lip corner depressor", "depress lip corner", "mouth",
                   ("lip corners pulled down", "corners of the mouth turned down",
                    "depressed lip corners", "depresses the lip corners")),
        ActionUnit(16, "lower lip depressor", "depress lower lip", "mouth",
                   ("lower lip pulled down", "depressed lower lip")),
        ActionUnit(17, "chin raiser", "raise chin", "chin",
                   ("raised chin", "chin raised", "chin pushed up", "raises the chin")),
        ActionUnit(18, "lip pucker", "pucker lips", "mouth", ("puckered lips",)),
        ActionUnit(19, "tongue show", "stick tongue out", "mouth",
                   ("tongue out", "tongue showing", "shows the tongue")),
        ActionUnit(20, "lip stretch", "stretch lips", "mouth",
                   ("stretched lips", "lips stretched", "stretches the lips")),
        ActionUnit(21, "neck tightener", "tighten neck", "neck", ("tightened neck",)),
        ActionUnit(22, "lip funneler", "show lip funneler", "mouth",
                   ("funneled lips", "lips funneled", "funnels the lips")),
        ActionUnit(23, "lip tightener", "tighten lips", "mouth",
                   ("tightened lips", "lips tightened", "tightens the lips")),
        ActionUnit(24, "lip pressor", "press lips", "mouth",
                   ("pressed lips", "lips pressed together", "presses the lips")),
        ActionUnit(25, "lips part", "separate lips", "mouth",
                   ("parted lips", "lips parted", "lips apart", "separated lips",
                    "mouth slightly open", "separates the lips")),
        ActionUnit(26, "jaw drop", "drop jaw", "jaw",
                   ("dropped jaw", "jaw dropped", "jaw lowered", "drops the jaw",
                    "mouth open")),
        ActionUnit(27, "mouth stretch", "stretch mouth", "mouth",
                   ("mouth stretched", "mouth wide open", "stretches the mouth")),
        ActionUnit(28, "lip suck", "suck lips", "mouth", ("sucked lips", "lips sucked in")),
        ActionUnit(43, "eyes closed", "close eyes", "eye",
                   ("closed eyes", "eyes shut", "closes the eyes", "shut eyes")),
    ]
}
AU_NUMBERS: tuple[int, ...] = tuple(sorted(ACTION_UNITS))

# The 13 RAF-AU AUs the paper's Table 4 probe scores (AU F1 per AU and their average).
RAFAU_PROBE_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 10, 12, 16, 17, 25, 26, 27)

# Commonly used AU subsets (see ../shared/facts/datasets.md).
AU_SUBSETS: dict[str, tuple[int, ...]] = {
    "bp4d": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "disfa": (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26),
    "disfa8": (1, 2, 4, 6, 9, 12, 25, 26),
    "gft": (1, 2, 4, 6, 10, 12, 14, 15, 23, 24),
    "emotionet": (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26),
    "rafau13": RAFAU_PROBE_AUS,
    "paper27": AU_NUMBERS,
}

# FACS intensity grades: 0 absent, then A-E as 1-5.
INTENSITY_LETTERS = {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5}
INTENSITY_WORDS = {0: "absent", 1: "trace", 2: "slight", 3: "marked", 4: "severe",
                   5: "maximum"}
# Adverbs for captions that mention intensity ("slightly raises inner eyebrow").
INTENSITY_ADVERBS = {1: "barely", 2: "slightly", 3: "clearly", 4: "strongly", 5: "extremely"}
# How a rule caption says an AU's intensity: "adverb" ("slightly raises cheek") or "degree",
# the FACS A-E word after the action ("raises cheek with slight intensity").
INTENSITY_STYLES: tuple[str, ...] = ("adverb", "degree")
DEGREE_SUFFIX = "intensity"  # the noun after the degree word: "with marked intensity"


def degree_word(level: int) -> str:
    """The FACS A-E word for an intensity 1-5 (trace, slight, marked, severe, maximum)."""
    if level not in INTENSITY_WORDS or level == 0:
        raise InputError(f"AU intensity degree must be 1-5, got {level!r}")
    return INTENSITY_WORDS[level]


def intensity_from_word(word: str) -> int | None:
    """1-5 for a degree word or intensity adverb of this module ("marked", "slightly"), else
    None: the reverse of what the rule captions write, for reading intensity back."""
    text = word.strip().lower()
    for table in (INTENSITY_WORDS, INTENSITY_ADVERBS):
        for level, name in table.items():
            if level and name == text:
                return level
    return None


def check_intensity_style(style: str | bool | None, where: str = "intensity") -> str | None:
    """None (off), or a style of ``INTENSITY_STYLES``; True is the historical "adverb"."""
    if style is None or style is False:
        return None
    if style is True:
        return "adverb"
    if isinstance(style, str) and style.strip().lower() in INTENSITY_STYLES:
        return style.strip().lower()
    raise InputError(f"{where}: expected one of {list(INTENSITY_STYLES)} (or off), got "
                     f"{style!r}")


def intensity_from_letter(value: str | int) -> int:
    """Map an intensity given as 0-5 or as a FACS letter A-E to 0-5."""
    if isinstance(value, int):
        if not 0 <= value <= 5:
            raise InputError(f"AU intensity must be 0-5, got {value}")
        return value
    text = str(value).strip().upper()
    if text in INTENSITY_LETTERS:
        return INTENSITY_LETTERS[text]
    if text.isdigit() and 0 <= int(text) <= 5:
        return int(text)
    raise InputError(f"AU intensity must be 0-5 or A-E, got {value!r}")


def third_person(verb_phrase: str) -> str:
    """Conjugate the first word of a verb phrase for the third person singular."""
    head, _, rest = verb_phrase.partition(" ")
    if head.endswith(("s", "sh", "ch", "x", "z", "o")):
        head = head + "es"
    elif len(head) > 1 and head.endswith("y") and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head = head + "s"
    return f"{head} {rest}".strip()


def au_name(number: int | str) -> ActionUnit:
    """Look up an AU by number, with an error that lists the known ones."""
    try:
        return ACTION_UNITS[int(number)]
    except (KeyError, ValueError):
        raise MissingEntryError(f"AU {number!r} is not one of the {len(ACTION_UNITS)} AUs "
                                f"in lavis_ext.facs: {list(AU_NUMBERS)}") from None


def parse_au_subset(value: str | Iterable[int | str] | None,
                    where: str = "AU subset") -> tuple[int, ...] | None:
    """AUs from a subset name (``AU_SUBSETS``), a comma list ("1,2,12") or a list of numbers.

    ``None`` or an empty string means no subset (the caller's default). Every parser of an AU
    subset (command flags, run configs) goes through here, so they accept the same forms.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if value.strip().lower() in AU_SUBSETS:
            return AU_SUBSETS[value.strip().lower()]
        parts: list[int | str] = [p.strip() for p in value.split(",") if p.strip()]
    else:
        parts = list(value)
    try:
        return tuple(au_name(part).number for part in parts)
    except KeyError as err:
        raise InputError(f"{where}: {err.args[0]}; or name a subset: "
                         f"{', '.join(sorted(AU_SUBSETS))}") from None


# --- Emotions ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Emotion:
    name: str  # canonical lowercase noun used in records ("happiness")
    adjective: str  # "happy"
    adverb: str  # for compound labels ("happily")
    prototype_aus: tuple[int, ...]  # EMFACS-style prototype, used by the synthetic faces
    synonyms: tuple[str, ...] = field(default=())


BASIC_EMOTIONS: dict[str, Emotion] = {
    e.name: e
    for e in [
        Emotion("neutral", "neutral", "neutrally", (), ("neutrality", "calm", "expressionless")),
        Emotion("happiness", "happy", "happily", (6, 12),
                ("happy", "joy", "joyful", "pleased", "delighted", "cheerful", "amused")),
        Emotion("sadness", "sad", "sadly", (1, 4, 15),
                ("sad", "sorrow", "unhappy", "upset", "grief", "melancholy")),
        Emotion("anger", "angry", "angrily", (4, 5, 7, 23),
                ("angry", "rage", "furious", "annoyed", "irritated", "mad")),
        Emotion("surprise", "surprised", "surprisedly", (1, 2, 5, 26),
                ("surprised", "astonished", "astonishment", "amazed", "shocked")),
        Emotion("fear", "fearful", "fearfully", (1, 2, 4, 5, 7, 20, 26),
                ("fearful", "afraid", "scared", "frightened", "terrified", "anxious")),
        Emotion("disgust", "disgusted", "disgustedly", (9, 15, 16),
                ("disgusted", "revulsion", "repulsed", "grossed out")),
        Emotion("contempt", "contemptuous", "contemptuously", (12, 14),
                ("contemptuous", "scorn", "disdain", "sneer")),
    ]
}
EMOTION_NAMES: tuple[str, ...] = tuple(BASIC_EMOTIONS)

# The expression -> AU codebook of the spatial AU cues for interpretable FER (Belharbi et al.,
# FG 2024; see ../shared/facts/seed-systems.md). It differs from the EMFACS-style prototypes
# above, which drive the synthetic faces: this one says where an expression's cues lie, for
# ``expblip explain``'s heatmaps. Disgust follows the paper (AU10; its code uses AU5).
# Neutral has no map.
AU_CUE_CODEBOOK: dict[str, tuple[int, ...]] = {
    "happiness": (6, 12, 25),
    "surprise": (1, 2, 5, 26, 27),
    "fear": (1, 2, 4, 5, 20, 25, 26, 27),
    "anger": (4, 5, 7, 10, 17, 23, 24, 25, 26),
    "disgust": (9, 10, 16, 17, 25, 26),
    "sadness": (1, 4, 6, 15, 17),
    "neutral": (),
}

# RAF-DB compound labels (1-11) as pairs of basic emotions.
RAFDB_COMPOUND: dict[int, tuple[str, str]] = {
    1: ("happiness", "surprise"), 2: ("happiness", "disgust"), 3: ("sadness", "fear"),
    4: ("sadness", "anger"), 5: ("sadness", "surprise"), 6: ("sadness", "disgust"),
    7: ("fear", "anger"), 8: ("fear", "surprise"), 9: ("anger", "surprise"),
    10: ("anger", "disgust"), 11: ("disgust", "surprise"),
}
# RAF-DB basic labels (1-7).
RAFDB_BASIC: dict[int, str] = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness",
                               5: "sadness", 6: "anger", 7: "neutral"}
# AffectNet expression codes 0-7; 8 None, 9 Uncertain, 10 No-Face are not emotions.
AFFECTNET: dict[int, str] = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise",
                             4: "fear", 5: "disgust", 6: "anger", 7: "contempt"}
AFFECTNET_NON_EMOTION: dict[int, str] = {8: "none", 9: "uncertain", 10: "no-face"}


def canonical_emotion(word: str) -> str:
    """Normalise an emotion word ("Happy", "happiness", "joy") to its canonical name.

    Unknown words (FaceME has labels beyond the basic eight) are returned lowercased, so
    multi-label datasets keep their own vocabulary.
    """
    text = " ".join(word.strip().lower().replace("_", " ").split())
    for emotion in BASIC_EMOTIONS.values():
        if text in (emotion.name, emotion.adjective) or text in emotion.synonyms:
            return emotion.name
    return text


def join_words(words: Iterable[str], conjunction: str = "and") -> str:
    """Join words as English does: "a", "a and b", "a, b and c"."""
    items = [w for w in words if w]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


# --- Reading AUs back from free text (used by lavis_ext.metrics.recognition) ---------------

# Word-level equivalences applied before matching AU phrases, so that "eyebrows lift" meets
# the vocabulary's "brow raised". Keys and values are single words (any inflection).
WORD_EQUIVALENTS: dict[str, str] = {
    "eyebrow": "brow", "eyelid": "lid", "lift": "raise", "elevate": "raise",
    "downward": "down", "downwards": "down", "upward": "up", "upwards": "up",
}
# Phrases that name a group of AUs at once; a more specific mention (e.g. "inner brows
# raised") wins over these when both match the same words.
AU_GROUP_PHRASES: dict[str, tuple[int, ...]] = {
    "raised brows": (1, 2),
}
