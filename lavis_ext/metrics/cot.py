"""Chain-of-thought descriptions in ExpLLM's three parts: split them, read what they say.

ExpLLM (TMM 2025) writes a description as three bold-headed parts, ``**Key Observations:**``
(each AU, its intensity and the emotions it goes with), ``**Overall Emotional
Interpretation:**`` (how the AUs combine) and ``**Conclusion:**`` (the label). About one in
ten of its released texts puts the colon outside the bold (``**Key Observations**:``), so
both are accepted, in any case. The AUs a text claims are read from the observations only
and its emotion from the conclusion only: the interpretation weighs candidates it may then
reject. Words are read by :func:`lavis_ext.metrics.recognition.parse_caption`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lavis_ext.metrics.recognition import ParsedCaption, caption_intensities, parse_caption

# The headings as ExpLLM writes them (and as the cot-rule and cot-llm kinds write them).
OBSERVATIONS = "Key Observations"
INTERPRETATION = "Overall Emotional Interpretation"
CONCLUSION = "Conclusion"
SECTION_TITLES: tuple[str, str, str] = (OBSERVATIONS, INTERPRETATION, CONCLUSION)
SECTION_KEYS: tuple[str, str, str] = ("observations", "interpretation", "conclusion")


def marker(title: str) -> str:
    """The literal heading a section starts with: ``**Key Observations:**``."""
    return f"**{title}:**"


def _heading_pattern(title: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(w) for w in title.split())
    # "**Title:**" or "**Title**:" (or "**Title**" alone), any case
    return re.compile(rf"\*\*\s*{words}\s*(?::\s*\*\*|\*\*\s*:?)", re.IGNORECASE)


_HEADINGS = tuple(_heading_pattern(t) for t in SECTION_TITLES)


@dataclass
class CotSections:
    """The three parts of a CoT text (empty where a heading is missing), and which are."""
    observations: str = ""
    interpretation: str = ""
    conclusion: str = ""
    missing: list[str] = field(default_factory=list)  # titles of the headings not found
    out_of_order: bool = False

    @property
    def complete(self) -> bool:
        """All three headings present, in ExpLLM's order."""
        return not self.missing and not self.out_of_order


def split_cot(text: str) -> CotSections:
    """Split a CoT text at its three headings (first occurrence of each).

    A part runs from its heading to the next heading found, or to the end. Text before the
    first heading is dropped. Missing headings are listed, not guessed.
    """
    found: list[tuple[int, int, str]] = []  # (start, end of heading, key)
    missing = []
    for title, key, pattern in zip(SECTION_TITLES, SECTION_KEYS, _HEADINGS):
        match = pattern.search(text or "")
        if match is None:
            missing.append(title)
        else:
            found.append((match.start(), match.end(), key))
    ordered = sorted(found)
    parts: dict[str, str] = {}
    for k, (start, end, key) in enumerate(ordered):
        stop = ordered[k + 1][0] if k + 1 < len(ordered) else len(text)
        parts[key] = " ".join(text[end:stop].split())
    return CotSections(observations=parts.get("observations", ""),
                       interpretation=parts.get("interpretation", ""),
                       conclusion=parts.get("conclusion", ""), missing=missing,
                       out_of_order=[key for _, _, key in ordered]
                       != [key for _, _, key in found])


def has_cot_markers(text: str) -> bool:
    """All three headings present (either colon placement)."""
    return not split_cot(text).missing


@dataclass
class ParsedCot:
    """What a CoT text claims: AUs (observations), levels, and the concluded emotions."""
    sections: CotSections
    aus: set[int]
    intensities: dict[int, int]
    emotions: set[str]
    observations: ParsedCaption
    conclusion: ParsedCaption


def parse_cot(text: str) -> ParsedCot:
    """Read the AUs (and their degree words) from the observations, the emotion from the
    conclusion. A text without headings reads nothing (the caller counts it)."""
    sections = split_cot(text)
    observed = parse_caption(sections.observations)
    concluded = parse_caption(sections.conclusion)
    return ParsedCot(sections, set(observed.aus),
                     caption_intensities(sections.observations, observed),
                     set(concluded.emotions), observed, concluded)
