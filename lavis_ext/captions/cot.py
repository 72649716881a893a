"""Chain-of-thought captions in ExpLLM's three parts, by rule (kind ``cot-rule``).

ExpLLM (TMM 2025) trains on descriptions that reason from AUs to a label in three parts:
key observations (each AU, its intensity, the emotions it goes with), an overall
interpretation (how the AUs combine) and a conclusion (the label). Its text engine is not
released; this module writes the same structure from a record's labels, deterministically,
so that a model can be trained and scored on the format without an LLM:

- **Key Observations:** one line per present AU: its FACS name and code, the FACS A-E degree
  word when ``au_intensity`` gives a level, and the emotions whose prototype in
  :data:`lavis_ext.facs.BASIC_EMOTIONS` holds that AU;
- **Overall Emotional Interpretation:** the prototype(s) the AU set matches best (Jaccard
  overlap of the AU set and the prototype), and the dominant emotion;
- **Conclusion:** the emotion (see :func:`cot_emotions` for where it comes from), or
  "Undetermined" when neither a label nor the prototypes settle one.

The section headings and the parser live in :mod:`lavis_ext.metrics.cot`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from lavis_ext.facs import (BASIC_EMOTIONS, au_name, canonical_emotion, degree_word,
                            join_words)
from lavis_ext.metrics.cot import CONCLUSION, INTERPRETATION, OBSERVATIONS, marker

# Where a record without emotion labels takes its emotion from: the Emot-BLIP pseudo caption
# of stage 3 (lavis_ext.method.pseudo_caption), read back with the caption parser; and where
# one without AU labels takes its AUs (and levels) from: AU-BLIP's pseudo caption.
PSEUDO_EMOTION_KIND = "emotion-pseudo"
PSEUDO_AU_KIND = "au-pseudo"
# A prototype settles an unlabelled record's emotion only when it alone matches best and at
# least this well (Jaccard overlap of the AU set and the prototype).
MIN_PROTOTYPE_MATCH = 0.5
UNDETERMINED = "Undetermined"


@dataclass(frozen=True)
class PrototypeMatch:
    emotion: str
    shared: tuple[int, ...]  # prototype AUs that are present
    size: int  # AUs in the prototype
    score: float  # Jaccard overlap of the AU set and the prototype


def prototype_matches(aus: Iterable[int]) -> list[PrototypeMatch]:
    """Every basic emotion's prototype scored against an AU set, best first (ties keep the
    order of ``facs.BASIC_EMOTIONS``). Neutral (an empty prototype) scores 1 on an empty set."""
    present = set(int(a) for a in aus)
    matches = []
    for emotion in BASIC_EMOTIONS.values():
        proto = set(emotion.prototype_aus)
        union = proto | present
        score = len(proto & present) / len(union) if union else 1.0
        matches.append(PrototypeMatch(emotion.name, tuple(sorted(proto & present)),
                                      len(proto), score))
    return sorted(matches, key=lambda m: -m.score)


def best_prototypes(aus: Iterable[int]) -> list[PrototypeMatch]:
    """The prototypes tied for the best score, or none when no prototype overlaps at all."""
    matches = prototype_matches(aus)
    if not matches or matches[0].score == 0:
        return []
    return [m for m in matches if m.score == matches[0].score]


def typical_emotions(au: int) -> list[str]:
    """The emotions whose prototype holds ``au``, in ``facs.BASIC_EMOTIONS`` order."""
    return [e.name for e in BASIC_EMOTIONS.values() if int(au) in e.prototype_aus]


def cot_emotions(record: Mapping[str, Any]) -> tuple[list[str], str]:
    """The emotions a CoT concludes for a record, and where they come from.

    ``"label"``: the record's ``emotions``; ``"emotion-pseudo"``: the emotions named by its
    Emot-BLIP pseudo caption (``captions["emotion-pseudo"]``, stage 3 of the method); ``""``:
    neither (the AU prototypes decide, :func:`cot_caption`).
    """
    labels = []
    for label in record.get("emotions") or []:
        name = canonical_emotion(str(label))
        if name and name not in labels:
            labels.append(name)
    if labels:
        return labels, "label"
    from lavis_ext.metrics.recognition import parse_caption

    for text in (record.get("captions") or {}).get(PSEUDO_EMOTION_KIND) or []:
        found = parse_caption(text or "").emotions
        if found:
            return [e for e in BASIC_EMOTIONS if e in found], PSEUDO_EMOTION_KIND
    return [], ""


def cot_aus(record: Mapping[str, Any]) -> tuple[list[int], dict[int, int], str] | None:
    """The present AUs a CoT observes for a record, their levels (1-5) and their source.

    ``"label"``: the record codes AUs (``aus``; levels from ``au_intensity``); ``"au-pseudo"``:
    it codes none but has an AU-BLIP pseudo caption (``captions["au-pseudo"]``), whose AUs and
    degree words are read back with the caption parser. None: neither (nothing to observe).
    """
    aus = record.get("aus") or {}
    if any(v is not None for v in aus.values()):
        raw = record.get("au_intensity") or {}
        return (sorted(int(k) for k, v in aus.items() if v == 1),
                {int(k): int(v) for k, v in raw.items() if v}, "label")
    texts = [t for t in (record.get("captions") or {}).get(PSEUDO_AU_KIND) or [] if t]
    if not texts:
        return None
    from lavis_ext.metrics.recognition import caption_intensities, parse_caption

    parsed = parse_caption(texts[0])
    return sorted(parsed.aus), caption_intensities(texts[0], parsed), PSEUDO_AU_KIND


def _codes(aus: Sequence[int]) -> str:
    return join_words(f"AU{n}" for n in aus)


def _observation(au: int, level: int | None) -> str:
    name = au_name(au).noun
    line = f"- {name[:1].upper()}{name[1:]} (AU{au})"
    if level:
        line += f" at {degree_word(int(level))} intensity"
    typical = typical_emotions(au)
    if typical:
        return f"{line}; typical of {join_words(typical)}."
    return f"{line}; part of no basic prototype."


def _match_phrase(m: PrototypeMatch) -> str:
    return f"{m.emotion} ({len(m.shared)} of its {m.size} AUs)"


def decide_emotions(aus: Sequence[int], emotions: Sequence[str]) -> list[str]:
    """The emotions a CoT concludes: the given ones, else the one best prototype when it
    matches at least ``MIN_PROTOTYPE_MATCH``, else none (undetermined)."""
    if emotions:
        return list(emotions)
    best = best_prototypes(aus)
    if len(best) == 1 and best[0].score >= MIN_PROTOTYPE_MATCH:
        return [best[0].emotion]
    return []


def cot_caption(aus: Iterable[int], emotions: Sequence[str] = (), *,
                intensities: Mapping[int, int] | None = None) -> str:
    """The three-part CoT for the present AUs, their levels (0-5, optional) and the emotions
    to conclude (empty: decided by :func:`decide_emotions`)."""
    present = sorted(set(int(a) for a in aus))
    levels = {int(k): int(v) for k, v in (intensities or {}).items() if v}
    names = [canonical_emotion(e) for e in emotions]
    if present:
        observations = "\n".join(_observation(au, levels.get(au)) for au in present)
    else:
        observations = "- No action unit is active; the face is at rest."
    best = best_prototypes(present)
    if not present:
        combine = "With no action unit active, the face matches the neutral prototype."
    elif best:
        which = "prototype of" if len(best) == 1 else "prototypes of"
        combine = (f"Together, {_codes(present)} come closest to the {which} "
                   f"{join_words(_match_phrase(m) for m in best)}.")
    else:
        combine = f"Together, {_codes(present)} match no basic prototype."
    concluded = decide_emotions(present, names)
    by_name = {m.emotion: m for m in prototype_matches(present)}
    notes = []
    for name in concluded:
        match = by_name.get(name)
        if match is not None and match.size and all(name != b.emotion for b in best):
            notes.append(f"{name.capitalize()} shares {len(match.shared)} of its "
                         f"{match.size} prototype AUs with them.")
    if concluded:
        notes.append(f"The dominant emotion is {join_words(concluded)}.")
    else:
        notes.append("No single emotion dominates.")
    conclusion = join_words(concluded) if concluded else UNDETERMINED
    return (f"{marker(OBSERVATIONS)}\n{observations}\n"
            f"{marker(INTERPRETATION)} {' '.join([combine, *notes])}\n"
            f"{marker(CONCLUSION)} {conclusion[:1].upper()}{conclusion[1:]}.")


def record_cot_caption(record: Mapping[str, Any]) -> str | None:
    """``cot-rule`` for one record (AUs and emotions from :func:`cot_aus` and
    :func:`cot_emotions`): None when it has nothing to observe."""
    found = cot_aus(record)
    if found is None:
        return None
    present, levels, _ = found
    emotions, _ = cot_emotions(record)
    return cot_caption(present, emotions, intensities=levels)
