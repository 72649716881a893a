"""Load the prompt and template files under ``prompts/`` and build chat messages from them.

Wording lives in YAML so that it can be changed (or translated) without touching code; a user
may point ``prompt_dir`` at a copy of the folder.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from lavis_ext.facs import ACTION_UNITS, AU_NUMBERS, au_name

PROMPT_DIR = Path(__file__).with_name("prompts")
Message = dict[str, str]


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file not found: {file}")
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a YAML mapping, got {type(data).__name__}")
    return data


def load_prompt(name: str, prompt_dir: str | Path | None = None) -> dict[str, Any]:
    """Read ``<prompt_dir>/<name>.yaml`` (cached); a missing key is reported by name."""
    return _load(str(Path(prompt_dir or PROMPT_DIR) / f"{name}.yaml"))


def _require(prompt: dict[str, Any], key: str, name: str) -> Any:
    if key not in prompt:
        raise KeyError(f"prompt file {name}.yaml has no '{key}' entry")
    return prompt[key]


def au_definitions() -> str:
    return "\n".join(f"AU{n}: {ACTION_UNITS[n].noun}" for n in AU_NUMBERS)


def au_list(aus: list[int]) -> str:
    """The AUs of a question, as "AU1 (inner brow raiser), AU12 (lip corner puller)"."""
    return ", ".join(f"AU{n} ({au_name(n).noun})" for n in sorted(set(aus)))


def au_messages(aus: list[int], prompt_dir: str | Path | None = None) -> list[Message]:
    """One-shot chat messages asking for a description of the given (present) AUs."""
    if not aus:
        raise ValueError("au_messages needs at least one AU; use rules.neutral_au_caption() "
                         "for faces without any")
    p = load_prompt("au_caption", prompt_dir)
    system = _require(p, "system", "au_caption").format(definitions=au_definitions())
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _require(p, "example_question", "au_caption")},
        {"role": "assistant", "content": _require(p, "example_answer", "au_caption").strip()},
        {"role": "user", "content": _require(p, "question", "au_caption").format(aus=au_list(aus))},
    ]


def fusion_messages(au_caption: str, emotion_caption: str,
                    prompt_dir: str | Path | None = None) -> list[Message]:
    """Zero-shot chat messages asking to fuse an AU caption and an emotion caption."""
    p = load_prompt("fusion", prompt_dir)
    question = _require(p, "question", "fusion").format(
        au_caption=" ".join(au_caption.split()), emotion_caption=" ".join(emotion_caption.split()))
    return [{"role": "system", "content": _require(p, "system", "fusion")},
            {"role": "user", "content": question}]


def prompt_params(name: str, prompt_dir: str | Path | None = None) -> dict[str, Any]:
    """Sampling parameters of a prompt (temperature, max_tokens, ...)."""
    return dict(load_prompt(name, prompt_dir).get("params") or {})
