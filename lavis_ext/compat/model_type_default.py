"""Fix: ``load_model_and_preprocess(name)`` / ``load_model(name)`` without a model type.

LAVIS 1.0.2 makes ``model_type`` a required positional argument of both functions, although
its model classes name a default type. We want ``load_model_and_preprocess("exp_blip")`` to
load the model's ``base`` type (the paper's released Exp-BLIP). The patches extend the
functions' ``__defaults__`` in place, so every reference to them (``lavis.load_model`` too)
gets the default.
"""
from __future__ import annotations

DEFAULT_MODEL_TYPE = "base"

# LAVIS 1.0.2's defaults of the parameters after ``model_type``.
_STOCK_DEFAULTS = {
    "load_model": (False, "cpu", None),  # is_eval, device, checkpoint
    "load_model_and_preprocess": (False, "cpu"),  # is_eval, device
}


def _with_default_type(function: str, defaults: tuple) -> tuple:
    if defaults != _STOCK_DEFAULTS[function]:
        raise ValueError(
            f"lavis.models.{function} has defaults {defaults!r}, not LAVIS 1.0.2's "
            f"{_STOCK_DEFAULTS[function]!r}: cannot give model_type a default"
        )
    return (DEFAULT_MODEL_TYPE, *defaults)


def patch_load_model_defaults(defaults: tuple) -> tuple:
    """Patch factory for ``load_model.__defaults__``."""
    return _with_default_type("load_model", defaults)


def patch_load_model_and_preprocess_defaults(defaults: tuple) -> tuple:
    """Patch factory for ``load_model_and_preprocess.__defaults__``."""
    return _with_default_type("load_model_and_preprocess", defaults)
