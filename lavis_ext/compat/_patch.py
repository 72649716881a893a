"""The one mechanism every LAVIS 1.0.2 patch goes through: records, a ledger, overlays.

A :class:`Patch` names its target as ``"module:qualname"`` (for example
``"lavis.runners.runner_base:RunnerBase.scaler"``) and its ``apply`` as ``"module:function"``:
a factory that receives the attribute as LAVIS has it and returns the replacement. Both are
strings, so the list of patches can be read without importing LAVIS or torch.

:func:`apply_patch` resolves the target, calls the factory and swaps the attribute through
:func:`replace`, which records the original in a ledger. Patching an attribute that is already
patched raises :class:`PatchConflict` naming both patches: two fixes of one attribute would
otherwise silently depend on their order. :func:`original` gives back what LAVIS shipped.

:class:`Overlay` stands in for a module *reference inside one LAVIS module* (for example the
name ``torch`` inside ``lavis.runners.runner_base``) and overrides only the few attributes
that are wrong there (``torch.load``), delegating everything else. This changes one call
site's behaviour without copying the LAVIS method around it and without touching torch
itself for the rest of the process.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


class PatchConflict(RuntimeError):
    """An attribute that lavis_ext already patched was patched a second time."""


class PatchTargetError(LookupError):
    """A patch's target does not exist in the installed LAVIS."""


@dataclass(frozen=True)
class Patch:
    """One fix to LAVIS: what it replaces, why, and the factory that builds the replacement."""

    id: str
    target: str  # "module:qualname", e.g. "lavis.models.base_model:BaseModel.load_checkpoint"
    reason: str
    apply: str  # "module:function"; function(lavis_attribute) -> replacement

    def resolve(self) -> tuple[Any, str]:
        """The object that holds the target attribute, and the attribute's name."""
        module_name, _, qualname = self.target.partition(":")
        if not qualname:
            raise PatchTargetError(f"patch {self.id}: target {self.target!r} is not 'module:qualname'")
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            if not hasattr(owner, part):
                raise PatchTargetError(f"patch {self.id}: {module_name} has no {qualname!r}")
            owner = getattr(owner, part)
        present = name in owner.__dict__ if isinstance(owner, type) else hasattr(owner, name)
        if not present:
            raise PatchTargetError(f"patch {self.id}: {module_name} has no {qualname!r}")
        return owner, name

    def factory(self) -> Callable[[Any], Any]:
        module_name, _, function = self.apply.partition(":")
        return getattr(importlib.import_module(module_name), function)


@dataclass(frozen=True)
class _Applied:
    owner: Any  # kept so that its id() stays unique while the entry exists
    name: str
    original: Any
    patch_id: str


_LEDGER: dict[tuple[int, str], _Applied] = {}


def _get(owner: Any, name: str) -> Any:
    # Read from the class __dict__ so properties and functions come back unbound.
    return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)


def _refuse_second_patch(owner: Any, name: str, patch_id: str) -> None:
    entry = _LEDGER.get((id(owner), name))
    if entry is not None:
        raise PatchConflict(
            f"{getattr(owner, '__name__', owner)!s}.{name} is already patched by "
            f"{entry.patch_id!r}; patch {patch_id!r} would patch it again"
        )


def replace(owner: Any, name: str, new: Any, patch_id: str) -> None:
    """Set ``owner.name = new``, remembering the original; a second patch raises."""
    _refuse_second_patch(owner, name, patch_id)
    _LEDGER[(id(owner), name)] = _Applied(owner, name, _get(owner, name), patch_id)
    setattr(owner, name, new)


def apply_patch(patch: Patch) -> None:
    """Build the replacement from LAVIS's attribute and swap it in."""
    owner, name = patch.resolve()
    _refuse_second_patch(owner, name, patch.id)
    replace(owner, name, patch.factory()(_get(owner, name)), patch.id)


def is_patched(owner: Any, name: str) -> bool:
    return (id(owner), name) in _LEDGER


def patched_by(owner: Any, name: str) -> str | None:
    """The id of the patch that replaced ``owner.name`` (None when LAVIS's own is in place)."""
    entry = _LEDGER.get((id(owner), name))
    return None if entry is None else entry.patch_id


def original(owner: Any, name: str) -> Any:
    """The attribute as LAVIS shipped it (the current one when no patch is applied)."""
    entry = _LEDGER.get((id(owner), name))
    return _get(owner, name) if entry is None else entry.original


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

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self!r} is read-only")

    def __repr__(self) -> str:
        target = object.__getattribute__(self, "_target")
        names = sorted(object.__getattribute__(self, "_overrides"))
        return f"<lavis_ext overlay of {getattr(target, '__name__', target)!r} overriding {names}>"
