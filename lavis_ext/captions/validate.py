"""Validation of LLM answers: what a caption may not contain, and how an answer is tidied.

An answer is rejected (and the call retried within its budget) when it is empty, too short or
too long, mentions an action unit by code or the word "AU", or - for AU captions - names an
emotion, which the prompt forbids because AU-BLIP must learn actions, not feelings.
Chain-of-thought answers (``cot-llm``) follow other rules (:func:`validate_cot`): they may
cite AU codes, but must hold ExpLLM's three headings, name no AU outside the record's labels
and conclude with the record's emotion.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from lavis_ext.facs import BASIC_EMOTIONS, canonical_emotion

# "AU", "AUs", "AU12", "AU 12", "AU-12", "au12"; also "action unit 12".
_AU_CODE = re.compile(r"\bAUs?\b|\bAU[\s\-_]*\d+|\baction\s+units?\s*\d+", re.IGNORECASE)
# Lead-ins that models add although asked not to ("Answer:", "A:", "Description:").
_LEAD_IN = re.compile(r"^\s*(?:answer|a|description|caption|fused description)\s*:\s*",
                      re.IGNORECASE)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    text: str  # the tidied answer (empty when rejected for being empty)
    reason: str = ""  # why it was rejected, e.g. "mentions an AU code ('AU 12')"


@lru_cache(maxsize=1)
def _emotion_pattern() -> re.Pattern[str]:
    words: set[str] = set()
    for emotion in BASIC_EMOTIONS.values():
        words.update([emotion.name, emotion.adjective, *emotion.synonyms])
    words.update(["emotion", "emotions", "emotional", "feeling", "feelings", "mood"])
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    # "neutral position" describes where a feature rests, not an emotion.
    return re.compile(rf"\b(?:{alternatives})\b(?!\s+position)", re.IGNORECASE)


def emotion_words(text: str) -> list[str]:
    """Emotion words (from lavis_ext.facs) found in a text, in order."""
    return [m.group(0) for m in _emotion_pattern().finditer(text)]


def au_codes(text: str) -> list[str]:
    """Mentions of AU codes or of the word "AU" in a text."""
    return [m.group(0) for m in _AU_CODE.finditer(text)]


def tidy(text: str | None, keep_lines: bool = False) -> str:
    """Strip whitespace, surrounding quotes and lead-ins such as "Answer:"; join lines, or with
    ``keep_lines`` keep one line per non-blank line (a CoT's items and headings)."""
    if not text:
        return ""
    if keep_lines:
        lines = [" ".join(line.split()) for line in str(text).strip().splitlines()]
        out = "\n".join(line for line in lines if line)
    else:
        out = " ".join(str(text).split())
    out = _LEAD_IN.sub("", out)
    if len(out) >= 2 and out[0] in _QUOTES and out[-1] in _QUOTES:
        out = out[1:-1].strip()
    return out


def _length_verdict(clean: str, min_chars: int, max_chars: int) -> Verdict | None:
    """The rejection of an empty, too short or too long tidied answer; None if it fits."""
    if not clean:
        return Verdict(False, "", "empty answer")
    if len(clean) < min_chars:
        return Verdict(False, clean, f"too short ({len(clean)} < {min_chars} characters)")
    if len(clean) > max_chars:
        return Verdict(False, clean, f"too long ({len(clean)} > {max_chars} characters)")
    return None


def validate_answer(text: str | None, kind: str, *, min_chars: int = 20,
                    max_chars: int = 1200, aus: Iterable[int] | None = None,
                    emotions: Sequence[str] | None = None) -> Verdict:
    """Check an LLM answer for a synthesis kind ("au-llm", "fuse" or "cot-llm"; ``aus`` and
    ``emotions``, the record's labels, are for "cot-llm")."""
    if kind == "cot-llm":
        return validate_cot(text, aus or (), emotions or (), min_chars=min_chars,
                            max_chars=max_chars)
    clean = tidy(text)
    rejected = _length_verdict(clean, min_chars, max_chars)
    if rejected:
        return rejected
    codes = au_codes(clean)
    if codes:
        return Verdict(False, clean, f"mentions an AU code ({codes[0]!r})")
    if kind.startswith("au"):
        found = emotion_words(clean)
        if found:
            return Verdict(False, clean, f"names an emotion in an AU caption ({found[0]!r})")
    return Verdict(True, clean)


def validate_cot(text: str | None, aus: Iterable[int], emotions: Sequence[str], *,
                 min_chars: int = 20, max_chars: int = 2000) -> Verdict:
    """Check a chain-of-thought answer against the record it describes.

    Rejected when a heading of ExpLLM's three parts is missing or out of order; when the text
    names (not negated) an AU outside ``aus``, the record's present AUs; or, where the record
    has ``emotions``, when the conclusion does not name exactly those (basic emotions, read
    with the caption parser; other labels must appear as words). Without emotions the
    conclusion is not checked.
    """
    from lavis_ext.metrics.cot import parse_cot
    from lavis_ext.metrics.recognition import parse_caption

    clean = tidy(text, keep_lines=True)
    rejected = _length_verdict(clean, min_chars, max_chars)
    if rejected:
        return rejected
    parsed = parse_cot(clean)
    if parsed.sections.missing:
        return Verdict(False, clean, f"missing section ({parsed.sections.missing[0]!r})")
    if parsed.sections.out_of_order:
        return Verdict(False, clean, "sections out of order")
    foreign = sorted(parse_caption(clean).aus - set(int(a) for a in aus))
    if foreign:
        return Verdict(False, clean, f"names an AU outside the labels (AU{foreign[0]})")
    wanted = [canonical_emotion(e) for e in emotions]
    if wanted:
        basic = {e for e in wanted if e in BASIC_EMOTIONS}
        others = [e for e in wanted if e not in BASIC_EMOTIONS]
        said = parsed.emotions
        lowered = " ".join(parsed.sections.conclusion.lower().split())
        if said - basic or basic - said or any(e not in lowered for e in others):
            return Verdict(False, clean, f"wrong conclusion ({parsed.sections.conclusion!r:.60}"
                                         f" for {' and '.join(wanted)})")
    return Verdict(True, clean)
