"""lavis_ext: a LAVIS plugin that turns BLIP-2 into a facial-expression captioner.

Importing the package is light: it imports neither torch, LAVIS nor transformers, so the plain
layers (``facs``, ``data``, ``captions``, ``metrics``) and the ``expblip`` commands built on
them start in a fraction of a second. Instead it registers a post-import hook on ``lavis``
(``wrapt.register_post_import_hook``): as soon as LAVIS finishes importing, whoever imports it,
the hook applies the few LAVIS 1.0.2 fixes no subclass can make (``lavis_ext.compat``) and
registers the plugin's processors, dataset builders, models, tasks, runners and learning-rate
schedulers with LAVIS's registry. If LAVIS is
already imported, the hook runs at once. On current transformers, LAVIS imports names that
moved; hooks on those modules (``compat.PROVIDES``) put them back before LAVIS imports them,
so on that stack ``lavis_ext`` must be imported before ``lavis``.

An error inside the hook (for example an unsupported LAVIS version) never breaks ``import
lavis``: it is kept, reported once as a warning, and raised again by :func:`ensure_registered`
and whenever ``lavis_ext.models``, ``.datasets``, ``.tasks``, ``.processors`` or ``.runners`` is reached
through this package. See ``docs/architecture.md``.
"""
from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

import wrapt

__version__ = "0.1.0"

# FutureWarnings printed by third-party code on every LAVIS import, filtered by exact message
# (and the module they are attributed to); every other warning is left alone.
KNOWN_THIRD_PARTY_WARNINGS: tuple[tuple[str, str], ...] = (
    # torch 2.14 deprecates torch.jit.script, which timm 0.4.12 / LAVIS call at import time.
    ("torch.jit._script",
     "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."),
    # fairscale 0.4.4 (pinned by LAVIS) decorates with the deprecated torch.cuda.amp helpers.
    ("fairscale.experimental.nn.offload",
     "`torch.cuda.amp.custom_fwd(args...)` is deprecated. "
     "Please use `torch.amp.custom_fwd(args..., device_type='cuda')` instead."),
    ("fairscale.experimental.nn.offload",
     "`torch.cuda.amp.custom_bwd(args...)` is deprecated. "
     "Please use `torch.amp.custom_bwd(args..., device_type='cuda')` instead."),
    # LAVIS's BaseTask train loop (left stock) enters torch.cuda.amp.autocast at every step; the
    # plugin's tasks autocast inside it with torch.amp (lavis_ext.tasks.run).
    ("lavis.tasks.base_task",
     "`torch.cuda.amp.autocast(args...)` is deprecated. "
     "Please use `torch.amp.autocast('cuda', args...)` instead."),
)

for _module, _message in KNOWN_THIRD_PARTY_WARNINGS:
    warnings.filterwarnings("ignore", message=re.escape(_message) + r"\Z", category=FutureWarning,
                            module=re.escape(_module) + r"\Z")

# Subpackages that need LAVIS (and register with it); reached lazily through __getattr__.
LAVIS_SUBPACKAGES = ("processors", "datasets", "models", "tasks", "runners")

_registration_error: BaseException | None = None
_registered = False


class RegistrationError(RuntimeError):
    """lavis_ext could not apply its fixes to LAVIS or register its components."""


def _register_with_lavis(lavis_module: Any = None) -> None:
    """The post-import hook on ``lavis``: apply the compat fixes, then register everything."""
    global _registration_error, _registered
    if _registered or _registration_error is not None:
        return
    try:
        from lavis_ext import compat

        compat.apply_all()
        for name in LAVIS_SUBPACKAGES:
            importlib.import_module(f"lavis_ext.{name}")
    except Exception as error:  # kept, so that `import lavis` itself still succeeds
        _registration_error = error
        warnings.warn(
            f"lavis_ext could not register with LAVIS ({type(error).__name__}: {error}); "
            "its models, datasets and tasks are unavailable", RuntimeWarning, stacklevel=2)
        return
    _registered = True


def ensure_registered() -> None:
    """Import LAVIS (which runs the hook) and raise the hook's error if it failed."""
    import lavis  # noqa: F401  (the post-import hook registers the plugin)

    if _registration_error is not None:
        raise RegistrationError(
            f"lavis_ext could not register with LAVIS: {_registration_error}"
        ) from _registration_error


def __getattr__(name: str) -> Any:
    if name in LAVIS_SUBPACKAGES:
        ensure_registered()
        return importlib.import_module(f"lavis_ext.{name}")
    raise AttributeError(f"module 'lavis_ext' has no attribute {name!r}")


def _provide_before_lavis(module: Any) -> None:
    """Post-import hook on the modules of ``compat.PROVIDES``: names LAVIS imports from them."""
    global _registration_error
    try:
        from lavis_ext import compat

        compat.provide_names(module)
    except Exception as error:  # kept and raised by ensure_registered, like the hook on lavis
        _registration_error = _registration_error or error
        warnings.warn(f"lavis_ext could not prepare {module.__name__} for LAVIS "
                      f"({type(error).__name__}: {error})", RuntimeWarning, stacklevel=2)


def _hook_provided_modules() -> None:
    from lavis_ext.compat import PROVIDES  # plain records: imports neither torch nor LAVIS

    for module in dict.fromkeys(record.module for record in PROVIDES):
        wrapt.register_post_import_hook(_provide_before_lavis, module)


_hook_provided_modules()
wrapt.register_post_import_hook(_register_with_lavis, "lavis")
