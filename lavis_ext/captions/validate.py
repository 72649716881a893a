"""Validation of LLM answers: what a caption may not contain, and how an answer is tidied.

An answer is rejected (and the call retried within its budget) when it is empty, too short or
too long, mentions an action unit by code or the word "AU", or - for AU captions - names an
emotion, which the prompt forbids because AU-BLIP must learn actions, not feelings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lavis_ext.facs import BASIC_EMOTIONS

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


def tidy(text: str | None) -> str:
    """Strip whitespace, surrounding quotes and lead-ins such as "Answer:"; join lines."""
    if not text:
        return ""
    out = " ".join(str(text).split())
    out = _LEAD_IN.sub("", out)
    if len(out) >= 2 and out[0] in _QUOTES and out[-1] in _QUOTES:
        out = out[1:-1].strip()
    return out


def validate_answer(text: str | None, kind: str, *, min_chars: int = 20,
                    max_chars: int = 1200) -> Verdict:
    """Check an LLM answer for a synthesis kind ("au-llm" or "fuse")."""
    clean = tidy(text)
    if not clean:
        return Verdict(False, "", "empty answer")
    if len(clean) < min_chars:
        return Verdict(False, clean, f"too short ({len(clean)} < {min_chars} characters)")
    if len(clean) > max_chars:
        return Verdict(False, clean, f"too long ({len(clean)} > {max_chars} characters)")
    codes = au_codes(clean)
    if codes:
        return Verdict(False, clean, f"mentions an AU code ({codes[0]!r})")
    if kind.startswith("au"):
        found = emotion_words(clean)
        if found:
            return Verdict(False, clean, f"names an emotion in an AU caption ({found[0]!r})")
    return Verdict(True, clean)
