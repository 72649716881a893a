"""The one mechanism the remaining LAVIS 1.0.2 patches go through: records and a ledger.

A :class:`Patch` names its target as ``"module:qualname"`` (for example
``"lavis.runners.runner_base:RunnerBase.scaler"``) and its ``apply`` as ``"module:function"``:
a factory that receives the attribute as LAVIS has it and returns the replacement. Both are
strings, so the list of patches can be read without importing LAVIS or torch.

:func:`apply_patch` resolves the target, calls the factory and swaps the attribute through
:func:`replace`, which records the original in a ledger. Patching an attribute that is already
patched raises :class:`PatchConflict` naming both patches: two fixes of one attribute would
otherwise silently depend on their order. :func:`original` gives back what LAVIS shipped.

Only the few records that no subclass or registration can replace go through it
(``lavis_ext.compat.PATCHES``).
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
    requires: str = ""  # e.g. "transformers>=4.46": applied only where installed versions match

    def active(self) -> bool:
        """Whether this fix applies to the installed versions (always, without ``requires``)."""
        return requirement_met(self.requires)

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
        if isinstance(owner, type):  # a class attribute must be the class's own (or its bases)
            present = name in owner.__dict__ or name == "__bases__"
        else:
            present = hasattr(owner, name)
        if not present:
            raise PatchTargetError(f"patch {self.id}: {module_name} has no {qualname!r}")
        return owner, name

    def factory(self) -> Callable[[Any], Any]:
        module_name, _, function = self.apply.partition(":")
        return getattr(importlib.import_module(module_name), function)


def requirement_met(requires: str) -> bool:
    """Whether the installed distributions satisfy ``requires`` ("" always does).

    ``requires`` is one or more PEP 508 requirements joined by ``;`` (for example
    ``"transformers>=4.46"``); a distribution that is not installed does not satisfy it.
    """
    from packaging.requirements import Requirement

    for spec in filter(None, (part.strip() for part in requires.split(";"))):
        requirement = Requirement(spec)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


@dataclass(frozen=True)
class Provide:
    """A name that LAVIS imports at module level from a library that no longer has it there.

    Unlike a :class:`Patch` it adds an attribute rather than replacing one, and it has to be in
    place *before* LAVIS is imported: ``import lavis_ext`` registers a post-import hook on
    ``module`` (see :func:`lavis_ext.compat.provide_names`). ``apply`` is a ``"module:function"``
    that receives the missing name and returns the object to put there.
    """

    id: str
    target: str  # "module:name", e.g. "transformers.modeling_utils:prune_linear_layer"
    reason: str
    apply: str
    requires: str = ""

    def active(self) -> bool:
        return requirement_met(self.requires)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def name(self) -> str:
        return self.target.partition(":")[2]

    def factory(self) -> Callable[[str], Any]:
        module_name, _, function = self.apply.partition(":")
        return getattr(importlib.import_module(module_name), function)


def provide(record: Provide, module: Any) -> None:
    """Put ``record``'s object into ``module``; an attribute already there must be that object."""
    value = record.factory()(record.name)
    present = module.__dict__.get(record.name, _MISSING)
    if present is value:
        return
    if present is not _MISSING:
        raise PatchConflict(f"{record.id}: {record.target} exists and is not the object this fix "
                            f"provides ({present!r} against {value!r})")
    setattr(module, record.name, value)


_MISSING = object()


@dataclass(frozen=True)
class _Applied:
    owner: Any  # kept so that its id() stays unique while the entry exists
    name: str
    original: Any
    patch_id: str


_LEDGER: dict[tuple[int, str], _Applied] = {}


def _get(owner: Any, name: str) -> Any:
    # Read from the class __dict__ so properties and functions come back unbound.
    if isinstance(owner, type) and name != "__bases__":
        return owner.__dict__[name]
    return getattr(owner, name)


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
