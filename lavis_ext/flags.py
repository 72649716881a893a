"""Flags that several `expblip` subcommands share, defined once so they mean the same thing.

Imports nothing heavy: subcommand modules call these from ``add_arguments``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_CONCURRENCY = 8


class _DeprecatedAlias(argparse.Action):
    """Store like the flag it aliases, with a note on stderr naming the flag to use."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_base_url(parser: Any, what: str = "the LLM steps",
                 default_text: str = "$OPENAI_BASE_URL, else OpenAI") -> None:
    """``--base-url``: the OpenAI-compatible endpoint (``--openai-base-url`` is an alias)."""
    parser.add_argument("--base-url", help=f"OpenAI-compatible endpoint for {what}, e.g. "
                                           f"http://127.0.0.1:8000/v1 (default: {default_text})")
    parser.add_argument("--openai-base-url", dest="base_url", action=_DeprecatedAlias,
                        new="--base-url", help="deprecated alias of --base-url")


def add_concurrency(parser: Any) -> None:
    """``--concurrency``: LLM requests in flight."""
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"LLM requests in flight (default {DEFAULT_CONCURRENCY})")


def add_no_progress(parser: Any) -> None:
    """``--no-progress``: no progress bars (for logs and CI)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (e.g. when writing to a log file)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value
