"""Fix: ``load_model_and_preprocess(name)`` / ``load_model(name)`` without a model type.

LAVIS 1.0.2 makes ``model_type`` a required positional argument of both functions, although
its model classes name a default type. We want ``load_model_and_preprocess("exp_blip")`` to
load the model's ``base`` type (the paper's released Exp-BLIP). The functions' defaults are
extended in place, so references imported before ``import lavis_ext`` get them too.
"""
from __future__ import annotations

DEFAULT_MODEL_TYPE = "base"


def apply() -> None:
    import lavis.models as models

    for func, tail in ((models.load_model, (False, "cpu", None)),
                       (models.load_model_and_preprocess, (False, "cpu"))):
        if func.__defaults__ == tail:
            func.__defaults__ = (DEFAULT_MODEL_TYPE, *tail)
