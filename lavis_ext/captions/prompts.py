"""Load the prompt and template files under ``prompts/`` and build chat messages from them.

Wording lives in YAML so that it can be changed (or translated) without touching code.
LLM prompts come in named sets, ``prompts/<set>/{au_caption,fusion,cot}.yaml``: ``paper`` (the
default; the paper's design, Figs. 2 and 4, in our words) and ``concise`` (shorter answers).
Rule templates are ``prompts/rules.yaml``. A user can instead name a folder with their own
copies (``prompt_dir``) or one file per prompt (``au_prompt`` / ``fusion_prompt``); every
file, bundled or not, passes the same checks (``check_prompt``) and its answers the same
validation (``validate.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from lavis_ext.errors import InputError, MissingEntryError
from lavis_ext.facs import ACTION_UNITS, AU_NUMBERS, au_name, degree_word, join_words

PROMPT_DIR = Path(__file__).with_name("prompts")
PROMPT_SETS = ("paper", "concise")
DEFAULT_PROMPT_SET = "paper"
LLM_PROMPTS = ("au_caption", "fusion", "cot")
Message = dict[str, str]

# Placeholders each prompt text must (or may) use; anything else in braces is an error.
_REQUIRED = {
    ("au_caption", "system"): {"definitions"},
    ("fusion", "question"): {"au_caption", "emotion_caption"},
    ("cot", "question"): {"aus", "emotion"},
}
_AU_NAMING = {"au_codes", "aus"}  # the AU question names the AUs with one of these
_ALLOWED = {
    "au_caption": {"definitions", "au_codes", "aus", "sentences"},
    "fusion": {"au_caption", "emotion_caption"},
    "cot": {"aus", "emotion"},
}


@dataclass(frozen=True)
class PromptChoice:
    """Where the prompts come from: a bundled set, a folder of copies, or single files."""
    prompt_set: str = DEFAULT_PROMPT_SET
    prompt_dir: str | None = None
    au_prompt: str | None = None
    fusion_prompt: str | None = None

    def path(self, name: str) -> Path:
        explicit = {"au_caption": self.au_prompt, "fusion": self.fusion_prompt}.get(name)
        if explicit:
            return Path(explicit)
        if self.prompt_dir:
            return Path(self.prompt_dir) / f"{name}.yaml"
        if name not in LLM_PROMPTS:
            return PROMPT_DIR / f"{name}.yaml"
        if self.prompt_set not in PROMPT_SETS:
            raise InputError(f"unknown prompt set {self.prompt_set!r}: bundled sets are "
                             f"{list(PROMPT_SETS)} (or give your own file with --au-prompt / "
                             f"--fusion-prompt, or a folder with --prompt-dir)")
        return PROMPT_DIR / self.prompt_set / f"{name}.yaml"


Source = Union[PromptChoice, str, Path, None]


def _choice(source: Source) -> PromptChoice:
    if isinstance(source, PromptChoice):
        return source
    return PromptChoice(prompt_dir=str(source) if source else None)


def _fields(text: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def check_prompt(name: str, data: dict[str, Any], file: Path) -> dict[str, Any]:
    """The rules every prompt file follows, whichever set it belongs to."""
    if name not in LLM_PROMPTS:
        return data
    keys = ["question"] + (["system", "example_question", "example_answer"]
                           if name == "au_caption" else
                           ["system", "unknown_emotion"] if name == "cot" else [])
    for key in keys:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise MissingEntryError(f"prompt file {file} has no '{key}' entry (a non-empty "
                                    f"text)")
    for key in ("system", "example_question", "example_answer", "question"):
        if key not in data or data[key] in (None, ""):
            continue
        if not isinstance(data[key], str):
            raise InputError(f"{file}: '{key}' must be a text")
        try:
            used = _fields(data[key])
        except ValueError as err:
            raise InputError(f"{file}: '{key}': {err} (write a literal brace as {{{{ or }}}})") \
                from None
        unknown = used - _ALLOWED[name]
        if unknown:
            raise InputError(f"{file}: '{key}' uses unknown placeholder(s) {sorted(unknown)}; "
                             f"allowed: {sorted(_ALLOWED[name])}")
        required = _REQUIRED.get((name, key), set())
        if (name, key) == ("au_caption", "question") and not used & _AU_NAMING:
            raise InputError(f"{file}: 'question' must name the AUs with {{au_codes}} or {{aus}}")
        if not required <= used:
            raise InputError(f"{file}: '{key}' must contain "
                             f"{' and '.join('{' + r + '}' for r in sorted(required))}")
    if "sentences" in _fields(" ".join(str(data.get(k) or "") for k in keys)) \
            and not str(data.get("sentences") or "").strip():
        raise InputError(f"{file}: the texts use {{sentences}}, so set 'sentences' (e.g. \"1~3\")")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(f"{file}: 'params' must be a mapping of request parameters")
    try:
        low, high = int(data.get("min_chars", 20)), int(data.get("max_chars", 1200))
    except (TypeError, ValueError):
        raise InputError(f"{file}: 'min_chars' and 'max_chars' must be integers") from None
    if not 0 <= low < high:
        raise InputError(f"{file}: need 0 <= min_chars < max_chars, got {low} and {high}")
    if name == "au_caption":
        from lavis_ext.captions.validate import validate_answer

        example = _format(data["example_answer"], data, file)
        verdict = validate_answer(example, "au-llm", min_chars=low, max_chars=high)
        if not verdict.ok:
            raise InputError(f"{file}: the example answer breaks the answer rules it teaches "
                             f"({verdict.reason})")
    return data


@lru_cache(maxsize=None)
def _load(path: str, name: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{file}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: expected a YAML mapping, got {type(data).__name__}")
    return check_prompt(name, data, file)


def prompt_file(name: str, source: Source = None) -> Path:
    """The file ``name`` (``au_caption``, ``fusion`` or ``rules``) is read from."""
    return _choice(source).path(name)


def load_prompt(name: str, source: Source = None) -> dict[str, Any]:
    """Read and check a prompt file (cached). ``source``: a ``PromptChoice``, or a folder
    holding ``<name>.yaml`` (a copy of the prompt files), or None for the default set."""
    return _load(str(prompt_file(name, source)), name)


def _format(text: str, prompt: dict[str, Any], file: Path | str, **values: str) -> str:
    values.setdefault("sentences", str(prompt.get("sentences") or ""))
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"{file}: cannot fill the text ({err})") from None


def au_definitions() -> str:
    return "\n".join(f"AU{n}: {ACTION_UNITS[n].noun}" for n in AU_NUMBERS)


def au_list(aus: list[int]) -> str:
    """The AUs of a question, as "AU1 (inner brow raiser), AU12 (lip corner puller)"."""
    return ", ".join(f"AU{n} ({au_name(n).noun})" for n in sorted(set(aus)))


def au_codes(aus: list[int]) -> str:
    """The AUs of a question by code, as "AU1, AU2 and AU26"."""
    return join_words(f"AU{n}" for n in sorted(set(aus)))


def au_messages(aus: list[int], source: Source = None) -> list[Message]:
    """One-shot chat messages asking for a description of the given (present) AUs."""
    if not aus:
        raise ValueError("au_messages needs at least one AU; use rules.neutral_au_caption() "
                         "for faces without any")
    p = load_prompt("au_caption", source)
    file = prompt_file("au_caption", source)
    fill = {"definitions": au_definitions(), "aus": au_list(aus), "au_codes": au_codes(aus)}
    return [
        {"role": "system", "content": _format(p["system"], p, file, **fill)},
        {"role": "user", "content": _format(p["example_question"], p, file, **fill)},
        {"role": "assistant", "content": " ".join(_format(p["example_answer"], p, file,
                                                          **fill).split())},
        {"role": "user", "content": _format(p["question"], p, file, **fill)},
    ]


def fusion_messages(au_caption: str, emotion_caption: str,
                    source: Source = None) -> list[Message]:
    """Zero-shot chat messages asking to fuse an AU caption and an emotion caption."""
    p = load_prompt("fusion", source)
    question = _format(p["question"], p, prompt_file("fusion", source),
                       au_caption=" ".join(au_caption.split()),
                       emotion_caption=" ".join(emotion_caption.split()))
    system = str(p.get("system") or "").strip()
    return ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": question}]


def prompt_params(name: str, source: Source = None) -> dict[str, Any]:
    """Sampling parameters of a prompt (temperature, max_tokens, ...)."""
    return dict(load_prompt(name, source).get("params") or {})


def cot_au_list(aus: list[int], levels: Mapping[int, int] | None = None) -> str:
    """The AUs of a CoT question with their FACS A-E degree where known: "AU6 (cheek raiser,
    marked intensity), AU12 (lip corner puller)"; "none" for a face at rest."""
    items = []
    for n in sorted(set(aus)):
        level = (levels or {}).get(n)
        degree = f", {degree_word(int(level))} intensity" if level else ""
        items.append(f"AU{n} ({au_name(n).noun}{degree})")
    return ", ".join(items) or "none"


def cot_messages(aus: list[int], emotions: list[str], source: Source = None, *,
                 levels: Mapping[int, int] | None = None) -> list[Message]:
    """Zero-shot chat messages asking for ExpLLM's three-part reasoning from AUs to a label.

    ``emotions``: the label(s) the conclusion must give; empty fills ``{emotion}`` with the
    prompt's ``unknown_emotion`` text (conclude from the AUs, or say it is undetermined).
    """
    p = load_prompt("cot", source)
    file = prompt_file("cot", source)
    emotion = join_words(emotions) if emotions else " ".join(str(p["unknown_emotion"]).split())
    fill = {"aus": cot_au_list(aus, levels), "emotion": emotion}
    return [{"role": "system", "content": _format(p["system"], p, file, **fill).strip()},
            {"role": "user", "content": _format(p["question"], p, file, **fill).strip()}]
