"""Other systems' outputs as predictions for `expblip evaluate --pred FILE`.

A prediction file is a JSON list, a JSON object of ``{id: text}``, or JSONL (one object a
line). Each item gives an id (``image_id``, ``id`` or ``question_id``) and a text (``caption``,
``text``, ``answer``, ``prediction``, ``output`` or ``response``); ``--id-field`` and
``--text-field`` name others. The text is read in one of these formats:

- ``caption``: the text as it is (ours, or any describer's plain output);
- ``facial-r1``: ``<think>...</think><answer>...</answer>`` (Facial-R1). The caption metrics
  score the think and answer text together, tags removed; AUs and emotions are read from the
  answer only, since the reasoning weighs AUs it then rejects. An output without an answer
  is kept with an empty recognition text and counted;
- ``expllm``: ExpLLM's three bold sections (``**Key observations**``, ``**Overall emotional
  interpretation**``, ``**Conclusion**``). The caption metrics score all three; AUs are read
  from all of them, the emotion from the last section only (the interpretation may name
  candidates it rules out). An output with fewer than three sections is counted;
- ``cot``: the same three parts found by their titles (``metrics.cot``; ``**Key
  Observations:**`` or ``**Key Observations**:``, any case, anywhere in the text), as the
  ``cot-rule`` / ``cot-llm`` kinds and ExpLLM's released data write them. The caption
  metrics score the whole text (cot references carry the headings too); AUs and their levels
  are read from the observations only, the emotion from the conclusion only. An output
  lacking a heading is counted. ``auto`` never picks it: name it.

AU codes in any format ("brow lowerer (AU4)", "AU1+AU2") are read by
``metrics.recognition``. ``auto`` picks ``facial-r1`` when most texts hold an ``<answer>`` tag,
``expllm`` when most hold three bold headings, else ``caption``, and says why.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from lavis_ext.errors import InputError
from lavis_ext.metrics.cot import split_cot

FORMATS = ("auto", "caption", "facial-r1", "expllm", "cot")
ID_FIELDS = ("image_id", "id", "question_id")
TEXT_FIELDS = ("caption", "text", "answer", "prediction", "output", "response")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
# "**Key observations**:" or "**Conclusion:**" at the start of a line: one section heading.
_BOLD_HEADING = re.compile(r"^\s*(?:[-*#]+\s*)?\*\*([^*\n]{1,80}?)\*\*\s*:?", re.MULTILINE)
EXPLLM_SECTIONS = 3


class PredictionFormatError(InputError):
    """A prediction file cannot be read, or an item lacks what its format needs."""


def _items(path: Path) -> list[tuple[str, Any]]:
    """(where, item) for each prediction in a JSON or JSONL file."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            raise PredictionFormatError(f"{path}: empty file; expected JSON or JSONL "
                                        f"predictions") from None
        items = []
        for n, line in lines:
            try:
                items.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise PredictionFormatError(f"{path}:{n}: not valid JSON ({err.msg}); expected "
                                            f"a JSON list, a JSON object or one JSON object "
                                            f"a line") from None
        return items
    if isinstance(data, list):
        return [(f"{path}[{i}]", item) for i, item in enumerate(data)]
    if isinstance(data, dict):
        if data and all(isinstance(v, str) for v in data.values()):
            return [(f"{path}[{k!r}]", {"image_id": k, "caption": v}) for k, v in data.items()]
        return [(str(path), data)]  # one JSONL-like object in a .json file
    raise PredictionFormatError(f"{path}: expected a JSON list of predictions, an object "
                                f"{{id: text}} or JSONL, got {type(data).__name__}")


def _field(item: dict[str, Any], given: str | None, options: Sequence[str], what: str,
           where: str) -> Any:
    names = (given,) if given else options
    for name in names:
        if name in item:
            return item[name]
    flag = "--id-field" if what == "id" else "--text-field"
    raise PredictionFormatError(f"{where}: no {what} field: expected one of "
                                f"{', '.join(names)} (or name it with {flag}); "
                                f"the item has {sorted(item)}")


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each bold-headed section, in order."""
    heads = list(_BOLD_HEADING.finditer(text))
    return [(h.group(1).strip().rstrip(":"), text[h.end():(heads[k + 1].start()
             if k + 1 < len(heads) else len(text))].strip()) for k, h in enumerate(heads)]


def detect_format(texts: Sequence[str]) -> tuple[str, str]:
    """The format most texts are in, and the reason, for the log line."""
    n = len(texts)
    tagged = sum(1 for t in texts if _ANSWER.search(t))
    sectioned = sum(1 for t in texts if len(_sections(t)) >= EXPLLM_SECTIONS)
    if n and tagged * 2 > n:
        return "facial-r1", f"an <answer> tag in {tagged} of {n} texts"
    if n and sectioned * 2 > n:
        return "expllm", f"{EXPLLM_SECTIONS} or more bold sections in {sectioned} of {n} texts"
    return "caption", (f"neither <answer> tags ({tagged} of {n}) nor {EXPLLM_SECTIONS} bold "
                       f"sections ({sectioned} of {n}) in most texts")


def split_text(text: str, fmt: str) -> tuple[dict[str, str], bool]:
    """``{"caption", "au_text", "emotion_text"}`` of one output, and whether it had the
    parts its format asks for."""
    if fmt == "facial-r1":
        answer = _ANSWER.search(text)
        think = _THINK.search(text)
        parts = [m.group(1).strip() for m in (think, answer) if m]
        caption = " ".join(parts) if parts else _TAG.sub(" ", text).strip()
        said = answer.group(1).strip() if answer else ""
        return {"caption": caption, "au_text": said, "emotion_text": said}, bool(answer)
    if fmt == "expllm":
        sections = _sections(text)
        if not sections:
            return {"caption": text, "au_text": text, "emotion_text": text}, False
        caption = " ".join(f"{head}: {body}" for head, body in sections)
        return ({"caption": caption, "au_text": caption, "emotion_text": sections[-1][1]},
                len(sections) >= EXPLLM_SECTIONS)
    if fmt == "cot":
        sections = split_cot(text)
        return ({"caption": text, "au_text": sections.observations,
                 "emotion_text": sections.conclusion}, sections.complete)
    if fmt == "caption":
        return {"caption": text, "au_text": text, "emotion_text": text}, True
    raise PredictionFormatError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def load_predictions(path: str | Path, fmt: str = "auto", *, id_field: str | None = None,
                     text_field: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predictions ready for ``evaluate_captions`` and a summary (the format chosen and why,
    the fields used, outputs lacking their format's parts)."""
    if fmt not in FORMATS:
        raise PredictionFormatError(f"--format: expected one of {', '.join(FORMATS)}, "
                                    f"got {fmt!r}")
    path = Path(path)
    if not path.is_file():
        raise PredictionFormatError(f"--pred: file not found: {path}")
    raw = []
    for where, item in _items(path):
        if not isinstance(item, dict):
            raise PredictionFormatError(f"{where}: expected an object with an id and a text, "
                                        f"got {item!r:.80}")
        image_id = _field(item, id_field, ID_FIELDS, "id", where)
        text = _field(item, text_field, TEXT_FIELDS, "text", where)
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool):
            raise PredictionFormatError(f"{where}: the id must be a string, got {image_id!r}")
        if text is not None and not isinstance(text, str):
            raise PredictionFormatError(f"{where}: the text must be a string, got {text!r:.80}")
        raw.append((str(image_id), text or ""))
    if fmt == "auto":
        chosen, reason = detect_format([t for _, t in raw])
    else:
        chosen, reason = fmt, "--format"
    predictions, incomplete = [], []
    for image_id, text in raw:
        parts, complete = split_text(text, chosen)
        if not complete and text.strip():
            incomplete.append(image_id)
        predictions.append({"image_id": image_id, "raw_text": text, **parts})
    summary = {"path": str(path), "format": chosen, "format_reason": reason,
               "n_items": len(raw), "n_incomplete": len(incomplete),
               "incomplete_examples": incomplete[:5],
               "incomplete_means": {"facial-r1": "no <answer> (recognition reads nothing)",
                                    "expllm": f"fewer than {EXPLLM_SECTIONS} bold sections",
                                    "cot": "a missing or misplaced cot heading",
                                    "caption": ""}[chosen]}
    return predictions, summary
