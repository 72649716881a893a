"""Shared helpers for the LAVIS 1.0.2 patches: idempotent attribute replacement and overlays.

Every compat module replaces as little as it can. Two shapes are used:

* ``replace(owner, name, new)`` swaps one attribute (a method, a property, a function) and
  remembers the original on the replacement, so that applying a patch twice is a no-op and
  tests can reach the stock behaviour through :func:`original`.
* :class:`Overlay` stands in for a module *reference inside one LAVIS module* (for example the
  name ``torch`` inside ``lavis.runners.runner_base``) and overrides only the few attributes
  that are wrong there (``torch.load``), delegating everything else. This changes one call
  site's behaviour without copying the LAVIS method around it and without touching torch
  itself for the rest of the process.
"""
from __future__ import annotations

from typing import Any

_MARK = "__lavis_ext_original__"


def _get(owner: Any, name: str) -> Any:
    # Read from the class __dict__ so properties and functions come back unbound.
    return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)


def _holder(obj: Any) -> Any:
    return obj.fget if isinstance(obj, property) else obj


def is_patched(owner: Any, name: str) -> bool:
    return hasattr(_holder(_get(owner, name)), _MARK)


def replace(owner: Any, name: str, new: Any) -> bool:
    """Replace ``owner.name`` by ``new`` unless already done; returns True if it changed now."""
    current = _get(owner, name)
    if hasattr(_holder(current), _MARK):
        return False
    setattr(_holder(new), _MARK, current)
    setattr(owner, name, new)
    return True


def original(owner: Any, name: str) -> Any:
    """The attribute as LAVIS shipped it (itself when no patch is applied)."""
    current = _get(owner, name)
    return getattr(_holder(current), _MARK, current)


class Overlay:
    """A read-only view of ``target`` where the attributes in ``overrides`` win."""

    def __init__(self, target: Any, **overrides: Any) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name: str) -> Any:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_target"), name)

    def __repr__(self) -> str:
        target = object.__getattribute__(self, "_target")
        names = sorted(object.__getattribute__(self, "_overrides"))
        return f"<lavis_ext overlay of {getattr(target, '__name__', target)!r} overriding {names}>"
