"""Read the AUs and emotions a caption mentions, and score them against an image's labels.

Captions name facial actions in many ways ("raises the inner eyebrows", "inner brows are
raised", "AU1", "no smile"). The parser works on word stems so verb and noun forms meet,
takes every phrase from ``lavis_ext.facs`` (forms, third-person forms, synonyms, group
phrases, emotion names/adjectives/synonyms), and applies negation by scope:

- a phrase matches when all its content words occur inside one clause within a window of
  ``len(phrase) + MAX_GAP`` words, in any order (so passives and "the left lip corner" count);
- a match whose words are a strict subset of another match's words is dropped (the more
  specific "lip corners pulled down" beats "pull lip corner");
- a match is negated when a negation word ("not", "no", "without", "never", "n't", "nor")
  sits inside it, or precedes it in the same clause with no "and"/"but"/... in between.

This is a vocabulary reader, not a language model: it misses paraphrases that share no
words with the vocabulary; add synonyms to ``lavis_ext.facs`` to widen it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from lavis_ext import facs
from lavis_ext.metrics.classification import binary_counts, f1_from_counts

MAX_GAP = 3
# Grammar words dropped from vocabulary phrases before matching (not AU vocabulary).
_FUNCTION_WORDS = frozenset(
    "the a an of is are be been being was were his her their its it to this that".split())
_NEGATIONS = frozenset("not no without never nor neither none cannot".split())
# Words that end a negation's scope inside a clause ("no smile and raised brows").
_SCOPE_BREAKS = frozenset("and but while whereas although though yet with".split())
# An emotion word followed by these describes a resting state, not an emotion.
_NOT_EMOTION_NEXT = frozenset({"position", "state"})
_CLAUSE_SPLIT = re.compile(r"[.;:!?,()\n]+")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# "AU4", "AU 4", "au-4", "AU04", with an optional side prefix (L/R/B/T, as RAF-AU writes
# them) and an optional intensity letter (A-E): "AU12B", "LAU12", "R AU2" is not one.
_AU_CODE = re.compile(r"\b[lrbt]?aus?\s*[-#]?\s*0*(\d{1,2})[a-e]?\b")
# A bracket that holds only AU codes ("(AU4)", "(AU6, AU12)"): read as part of the clause it
# follows, so that "no brow lowering (AU4)" negates the code as well as the words.
_AU_BRACKET = re.compile(r"[(\[]\s*((?:[lrbt]?aus?\s*[-#]?\s*\d{1,2}[a-e]?[\s,+/&]*"
                         r"(?:and\s+)?)+)[)\]]")


def _unbracket_codes(text: str) -> str:
    return _AU_BRACKET.sub(lambda m: " " + re.sub(r"[,/&]", " ", m.group(1)) + " ", text)


def stem(word: str) -> str:
    """Crude suffix stripping so that raise/raises/raised/raising all become 'rais'."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 3 or w.endswith("ss"):
        return w
    for suffix, keep in (("ing", 3), ("ed", 3), ("es", 4), ("s", 3), ("e", 4)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep:
            w = w[: -len(suffix)]
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiousl":
        w = w[:-1]  # dropp -> drop; doubled s and l stay (press, pull)
    return w


@lru_cache(maxsize=1)
def _equivalents() -> dict[str, str]:
    return {stem(k): stem(v) for k, v in facs.WORD_EQUIVALENTS.items()}


def _norm_token(token: str) -> str:
    s = stem(token)
    return _equivalents().get(s, s)


def _phrase_tokens(phrase: str) -> tuple[str, ...]:
    return tuple(_norm_token(t) for t in _TOKEN.findall(phrase.lower())
                 if t not in _FUNCTION_WORDS)


@dataclass(frozen=True)
class _Entry:
    tokens: tuple[str, ...]
    aus: tuple[int, ...] = ()
    emotion: str | None = None


@lru_cache(maxsize=1)
def _lexicon() -> tuple[_Entry, ...]:
    entries: dict[tuple, _Entry] = {}

    def add(phrase: str, aus: tuple[int, ...] = (), emotion: str | None = None) -> None:
        tokens = _phrase_tokens(phrase)
        if tokens:
            key = (tuple(sorted(tokens)), aus, emotion)
            entries.setdefault(key, _Entry(tokens, aus, emotion))

    for au in facs.ACTION_UNITS.values():
        for phrase in (au.noun, au.verb, facs.third_person(au.verb), *au.synonyms):
            add(phrase, (au.number,))
    for phrase, numbers in facs.AU_GROUP_PHRASES.items():
        add(phrase, tuple(numbers))
    for emotion in facs.BASIC_EMOTIONS.values():
        for phrase in (emotion.name, emotion.adjective, emotion.adverb, *emotion.synonyms):
            add(phrase, emotion=emotion.name)
    return tuple(entries.values())


@dataclass
class Mention:
    """One vocabulary phrase found in a caption."""

    aus: tuple[int, ...]
    emotion: str | None
    words: str  # the caption words that matched, for inspection
    negated: bool
    positions: frozenset[int] = field(repr=False, default=frozenset())


@dataclass
class ParsedCaption:
    aus: set[int]  # AUs mentioned as present
    negated_aus: set[int]  # AUs mentioned only under negation
    emotions: set[str]
    negated_emotions: set[str]
    mentions: list[Mention]


def _best_window(tokens: Sequence[str], wanted: tuple[str, ...]) -> list[int] | None:
    """Positions of the tightest window holding every wanted token, or None."""
    limit = len(wanted) + MAX_GAP
    best: list[int] | None = None
    for start, tok in enumerate(tokens):
        if tok not in wanted:
            continue
        need = list(wanted)
        picked: list[int] = []
        for pos in range(start, min(len(tokens), start + limit)):
            if tokens[pos] in need:
                need.remove(tokens[pos])
                picked.append(pos)
                if not need:
                    break
        if not need and (best is None or picked[-1] - picked[0] < best[-1] - best[0]):
            best = picked
    return best


def _negated(tokens: Sequence[str], positions: list[int]) -> bool:
    first, last = positions[0], positions[-1]
    if any(tokens[p] in _NEGATIONS for p in range(first, last + 1)):
        return True
    for p in range(first - 1, -1, -1):
        if tokens[p] in _NEGATIONS:
            return True
        if tokens[p] in _SCOPE_BREAKS:
            return False
    return False


def parse_caption(text: str) -> ParsedCaption:
    """Find the AUs and emotions a caption mentions, with negation applied."""
    mentions: list[Mention] = []
    lowered = _unbracket_codes(re.sub(r"n't\b", " not", text.lower()))
    for clause_index, clause in enumerate(_CLAUSE_SPLIT.split(lowered)):
        raw = _TOKEN.findall(clause)
        tokens = [_norm_token(t) for t in raw]
        found: list[Mention] = []
        for entry in _lexicon():
            positions = _best_window(tokens, entry.tokens)
            if positions is None:
                continue
            if entry.emotion and positions[-1] + 1 < len(tokens) \
                    and tokens[positions[-1] + 1] in _NOT_EMOTION_NEXT:
                continue  # "brows in a neutral position" names no emotion
            found.append(Mention(entry.aus, entry.emotion,
                                 " ".join(raw[positions[0]:positions[-1] + 1]),
                                 _negated(tokens, positions),
                                 frozenset((clause_index, p) for p in positions)))
        for code in _AU_CODE.finditer(clause):
            number = int(code.group(1))
            if number in facs.ACTION_UNITS:
                before = _TOKEN.findall(clause[: code.start()])
                offset = len(before)
                tokens_before = [_norm_token(t) for t in before]
                negated = _negated(tokens_before + ["au"], [offset])
                found.append(Mention((number,), None, code.group(0), negated,
                                     frozenset({(clause_index, -1 - code.start())})))
        # Drop matches that are strict subsets of another match (more specific wins).
        for m in found:
            if not any(m.positions < other.positions for other in found):
                mentions.append(m)
    aus = {au for m in mentions if not m.negated for au in m.aus}
    negated_aus = {au for m in mentions if m.negated for au in m.aus} - aus
    emotions = {m.emotion for m in mentions if m.emotion and not m.negated}
    negated_emotions = {m.emotion for m in mentions if m.emotion and m.negated} - emotions
    return ParsedCaption(aus, negated_aus, emotions, negated_emotions, mentions)


def _basic_emotion_labels(labels: Iterable[str]) -> tuple[set[str], list[str]]:
    known, unknown = set(), []
    for label in labels:
        name = facs.canonical_emotion(label)
        if name in facs.BASIC_EMOTIONS:
            known.add(name)
        else:
            unknown.append(label)
    return known, unknown


def recognition_scores(captions: Sequence[str], records: Sequence[Mapping[str, Any]],
                       au_subset: Iterable[int] | None = None, *,
                       emotion_captions: Sequence[str] | None = None) -> dict[str, Any]:
    """AU F1 (per AU and macro) and emotion accuracy of what captions say, against labels.

    AUs: an AU counts for an image when the record codes it 0/1 (null is skipped). The macro
    F1 averages AUs that have at least one positive label. Emotions: only records with basic
    emotion labels count; ``emotion_accuracy`` needs the caption's emotion set to equal the
    label set, ``emotion_hit_rate`` needs one labelled emotion named. ``emotion_captions``:
    read emotions from these texts instead (another system's conclusion, say).
    """
    if len(captions) != len(records):
        raise ValueError(f"{len(captions)} captions but {len(records)} records")
    parsed = [parse_caption(c or "") for c in captions]
    if emotion_captions is not None:
        if len(emotion_captions) != len(records):
            raise ValueError(f"{len(emotion_captions)} emotion texts but {len(records)} records")
        emotion_parsed = [parse_caption(c or "") for c in emotion_captions]
    else:
        emotion_parsed = parsed
    allowed = set(int(a) for a in au_subset) if au_subset is not None else None
    counts: dict[int, list[int]] = {}
    for p, record in zip(parsed, records):
        for key, value in (record.get("aus") or {}).items():
            au = int(key)
            if value is None or (allowed is not None and au not in allowed):
                continue
            c = counts.setdefault(au, [0, 0, 0, 0])  # tp, fp, fn, positives
            tp, fp, fn = binary_counts([bool(value)], [au in p.aus])
            c[0] += tp
            c[1] += fp
            c[2] += fn
            c[3] += int(bool(value))
    per_au = {str(au): f1_from_counts(c[0], c[1], c[2]) for au, c in sorted(counts.items())}
    scored = [f1_from_counts(c[0], c[1], c[2]) for au, c in sorted(counts.items()) if c[3] > 0]
    n_emo = exact = hit = no_emotion = unknown_label_records = 0
    for p, record in zip(emotion_parsed, records):
        labels = record.get("emotions") or []
        if not labels:
            continue
        known, unknown = _basic_emotion_labels(labels)
        if unknown:
            unknown_label_records += 1
            continue
        n_emo += 1
        exact += int(p.emotions == known)
        hit += int(bool(p.emotions & known))
        no_emotion += int(not p.emotions)
    return {
        "au_f1": per_au,
        "au_f1_macro": sum(scored) / len(scored) if scored else None,
        "au_positives": {str(au): c[3] for au, c in sorted(counts.items())},
        "emotion_accuracy": exact / n_emo if n_emo else None,
        "emotion_hit_rate": hit / n_emo if n_emo else None,
        "n_emotion_records": n_emo,
        "n_captions_without_emotion": no_emotion,
        "n_records_with_unknown_emotion_labels": unknown_label_records,
    }


# --- AU intensity read back from a caption ---------------------------------------------------

def caption_intensities(text: str, parsed: ParsedCaption | None = None) -> dict[int, int]:
    """AU -> 1-5 for the AUs a caption gives a level, from ``facs``'s degree words and adverbs.

    Each level word goes to the nearest AU mention in its clause (a tie to the one before it,
    as in "raises cheek with slight intensity"); words that belong to a matched phrase
    ("mouth slightly open") and negated mentions give no level. The first level an AU gets
    stands.
    """
    parsed = parsed or parse_caption(text)
    # the same clauses as parse_caption's (bracketed codes opened), so mention positions fit
    lowered = _unbracket_codes(re.sub(r"n't\b", " not", text.lower()))
    by_clause: dict[int, list[Mention]] = {}
    for mention in parsed.mentions:
        if mention.aus and not mention.negated:
            for clause, pos in mention.positions:
                if pos >= 0:  # AU codes ("AU12") carry a character offset, not a position
                    by_clause.setdefault(clause, []).append(mention)
                    break
    levels: dict[int, int] = {}
    for clause_index, clause in enumerate(_CLAUSE_SPLIT.split(lowered)):
        mentions = by_clause.get(clause_index)
        if not mentions:
            continue
        spans = [sorted(p for c, p in m.positions if c == clause_index) for m in mentions]
        taken = {p for span in spans for p in span}
        for pos, token in enumerate(_TOKEN.findall(clause)):
            level = facs.intensity_from_word(token)
            if level is None or pos in taken:
                continue
            # distance to each mention's span; the earlier mention wins a tie
            best = min(range(len(mentions)),
                       key=lambda k: (max(spans[k][0] - pos, pos - spans[k][-1], 0),
                                      spans[k][0] > pos))
            for au in mentions[best].aus:
                levels.setdefault(au, level)
    return levels


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r; None when fewer than two pairs or either side is constant."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / (sxx * syy) ** 0.5


def intensity_scores(captions: Sequence[str], records: Sequence[Mapping[str, Any]],
                     au_subset: Iterable[int] | None = None) -> dict[str, Any] | None:
    """PCC between the AU levels captions say and the records' ``au_intensity`` (0-5).

    One pair per (record, AU) the record codes (null skipped): an AU the caption does not
    name (or negates) reads 0; one named with a level word reads that level; one named
    without a level cannot be read and is left out (counted). The macro PCC averages the AUs
    whose PCC is defined. None when no record carries ``au_intensity``.
    """
    if len(captions) != len(records):
        raise ValueError(f"{len(captions)} captions but {len(records)} records")
    if not any(r.get("au_intensity") for r in records):
        return None
    allowed = set(int(a) for a in au_subset) if au_subset is not None else None
    pairs: dict[int, tuple[list[int], list[int]]] = {}
    without_level = 0
    for caption, record in zip(captions, records):
        parsed = parse_caption(caption or "")
        said = caption_intensities(caption or "", parsed)
        for key, value in (record.get("au_intensity") or {}).items():
            au = int(key)
            if value is None or (allowed is not None and au not in allowed):
                continue
            if au in parsed.aus and au not in said:
                without_level += 1
                continue
            ref, pred = pairs.setdefault(au, ([], []))
            ref.append(int(value))
            pred.append(said.get(au, 0) if au in parsed.aus else 0)
    per_au = {str(au): pearson(ref, pred) for au, (ref, pred) in sorted(pairs.items())}
    defined = [v for v in per_au.values() if v is not None]
    return {
        "pcc": per_au,
        "pcc_macro": sum(defined) / len(defined) if defined else None,
        "n_pairs": {str(au): len(ref) for au, (ref, _) in sorted(pairs.items())},
        "n_named_without_level": without_level,
    }
