"""Stage 1 and 3 text synthesis: rule captions, LLM captions and their fusion.

Modules: ``rules`` (templates), ``prompts`` (+ ``prompts/*.yaml``), ``validate`` (answer
checks), ``client`` (openai client, retries, accounting), ``cache`` (SQLite answer cache),
``cost`` (+ ``prices.yaml``), ``batch`` (Batch API), ``engine`` (:func:`synthesize_records`),
``synthesize`` (the ``expblip synthesize`` command), ``local_server`` (a template-answering
OpenAI-compatible server for tests and demos).
"""
from __future__ import annotations

from typing import Any

__all__ = ["synthesize_records", "ClientConfig", "LocalLLMServer"]


def __getattr__(name: str) -> Any:  # lazy, so that `import lavis_ext.captions.rules` stays light
    if name == "synthesize_records":
        from lavis_ext.captions.engine import synthesize_records
        return synthesize_records
    if name == "ClientConfig":
        from lavis_ext.captions.client import ClientConfig
        return ClientConfig
    if name == "LocalLLMServer":
        from lavis_ext.captions.local_server import LocalLLMServer
        return LocalLLMServer
    raise AttributeError(f"module 'lavis_ext.captions' has no attribute {name!r}")
