"""Token and cost accounting: a price table per model (``prices.yaml``), overridable.

A model without a price has an unknown cost; it is reported as unknown, never as zero, so a
user is not misled into thinking a run was free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lavis_ext.errors import InputError, UsageError

PRICE_FILE = Path(__file__).with_name("prices.yaml")


@dataclass
class PriceTable:
    models: dict[str, tuple[float, float]] = field(default_factory=dict)  # USD / 1M tokens
    batch_discount: float = 0.5

    @classmethod
    def load(cls, path: str | Path | None = None,
             overrides: dict[str, tuple[float, float]] | None = None) -> "PriceTable":
        """Read the bundled table, then ``path`` (if given) over it, then ``overrides``."""
        table = cls()
        for file in [PRICE_FILE] + ([Path(path)] if path else []):
            table._merge_file(file)
        table.models.update(overrides or {})
        return table

    def _merge_file(self, file: Path) -> None:
        if not file.is_file():
            raise FileNotFoundError(f"price file not found: {file}")
        data: Any = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
            raise InputError(f"{file}: expected a mapping with a 'models' mapping")
        if "batch_discount" in data:
            self.batch_discount = float(data["batch_discount"])
        for model, entry in (data.get("models") or {}).items():
            try:
                self.models[str(model)] = (float(entry["input"]), float(entry["output"]))
            except (TypeError, KeyError, ValueError):
                raise InputError(f"{file}: models.{model} must have numeric 'input' and "
                                 f"'output' (USD per 1M tokens), got {entry!r}") from None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int,
             batch: bool = False) -> float | None:
        """USD for the tokens, or None when the model has no price."""
        if model not in self.models:
            return None
        price_in, price_out = self.models[model]
        usd = (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
        return usd * self.batch_discount if batch else usd


def parse_price(text: str) -> tuple[str, tuple[float, float]]:
    """Parse a ``MODEL=IN,OUT`` command-line price (USD per 1M tokens)."""
    model, sep, prices = text.partition("=")
    parts = prices.split(",")
    try:
        if not sep or not model or len(parts) != 2:
            raise ValueError
        return model.strip(), (float(parts[0]), float(parts[1]))
    except ValueError:
        raise UsageError(f"--price expects MODEL=IN,OUT in USD per 1M tokens, e.g. "
                         f"gpt-4o-mini=0.15,0.60; got {text!r}") from None


def estimate_tokens(text: str) -> int:
    """Rough token count (about 4 characters per token in English) for --dry-run estimates."""
    return max(1, (len(text) + 3) // 4)


def format_usd(value: float | None) -> str:
    return "unknown (no price for this model)" if value is None else f"${value:.4f}"
