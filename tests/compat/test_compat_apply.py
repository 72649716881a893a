"""The remaining patch records (at most compat.MAX_LAVIS_CHANGES LAVIS attributes, one now):
applied once, through one mechanism, on LAVIS 1.0.2 only; and what the plugin registers
instead."""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import pkgutil
import subprocess
import sys
import types

import pytest

import lavis_ext
import lavis_ext.compat as compat
from lavis.common.registry import registry
from lavis_ext.compat import _patch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _current(patch: _patch.Patch) -> object:
    owner, name = patch.resolve()
    return _patch._get(owner, name)


def test_records_are_unique_and_complete() -> None:
    ids = [p.id for p in compat.PATCHES]
    assert len(ids) == len(set(ids))
    for patch in compat.PATCHES:
        assert patch.reason.strip(), patch.id
        assert patch.target.startswith("lavis.") and ":" in patch.target, patch.id
        assert callable(patch.factory()), patch.id
    # every module of lavis_ext.compat that defines patch factories is used by some record
    used = {p.apply.split(":")[0] for p in compat.PATCHES}
    for info in pkgutil.iter_modules(compat.__path__, "lavis_ext.compat."):
        module = importlib.import_module(info.name)
        factories = [n for n in vars(module) if n.startswith("patch_")]
        if factories:
            assert info.name in used, f"{info.name} has factories {factories} but no record"
    for module in used:
        module_factories = {n for n in vars(importlib.import_module(module)) if n.startswith("patch_")}
        referenced = {p.apply.split(":")[1] for p in compat.PATCHES if p.apply.startswith(module + ":")}
        assert module_factories == referenced, module


def test_every_record_is_applied_and_keeps_lavis_original() -> None:
    active = compat.active_patches()
    assert compat.applied() == {p.id for p in (*active, *compat.active_provides())}
    for patch in compat.PATCHES:
        if patch not in active:  # gated to other versions: LAVIS's attribute stays in place
            owner, name = patch.resolve()
            assert _patch.patched_by(owner, name) is None, patch.id
    for patch in active:
        owner, name = patch.resolve()
        assert _patch.patched_by(owner, name) == patch.id
        stock, now = _patch.original(owner, name), _current(patch)
        assert stock is not now, patch.id
        if patch.target.endswith(".__bases__"):  # a class's bases, extended in place
            assert now[:len(stock)] == stock and len(now) > len(stock), patch.id
        else:
            func = stock.fget if isinstance(stock, property) else stock
            assert func.__module__.startswith("lavis."), (patch.id, func.__module__)


def test_apply_all_again_changes_nothing() -> None:
    before = {p.id: id(_current(p)) for p in compat.PATCHES}
    compat.apply_all()
    assert {p.id: id(_current(p)) for p in compat.PATCHES} == before


def test_version_gates_select_the_records_of_the_installed_stack() -> None:
    transformers = importlib.metadata.version("transformers")
    current = compat.requirement_met(compat.CURRENT_TRANSFORMERS)
    assert current == (tuple(int(x) for x in transformers.split(".")[:2]) >= (4, 46)), transformers
    gated = [p for p in (*compat.PATCHES, *compat.PROVIDES) if p.requires]
    assert gated and all(p.requires == compat.CURRENT_TRANSFORMERS for p in gated)
    assert set(compat.active_patches()) == {p for p in compat.PATCHES if not p.requires or current}
    assert compat.requirement_met("") and compat.requirement_met("transformers>=4.0; torch>=2.0")
    assert not compat.requirement_met("transformers<1") and not compat.requirement_met("no-such-dist>=1")


def test_names_lavis_imports_from_transformers_are_there() -> None:
    # the names med.py / Qformer.py import; on the current stack they exist only through PROVIDES
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    for record in compat.PROVIDES:
        assert record.module == "transformers.modeling_utils", record.id
        assert getattr(modeling_utils, record.name) is getattr(pytorch_utils, record.name), record.id
    assert {r.id for r in compat.active_provides()} <= compat.applied()


def test_provide_refuses_to_replace_a_different_object() -> None:
    holder = types.ModuleType("holder")
    holder.prune_linear_layer = object()
    record = _patch.Provide("x.provide", "holder:prune_linear_layer", "test",
                            "lavis_ext.compat.transformers_current:from_pytorch_utils")
    with pytest.raises(compat.PatchConflict, match="x.provide"):
        _patch.provide(record, holder)
    del holder.prune_linear_layer
    _patch.provide(record, holder)
    import transformers.pytorch_utils as pytorch_utils
    assert holder.prune_linear_layer is pytorch_utils.prune_linear_layer


def test_patching_a_patched_attribute_again_raises() -> None:
    for patch in compat.active_patches():
        with pytest.raises(compat.PatchConflict, match=patch.id.replace(".", r"\.")):
            _patch.apply_patch(patch)
    # two different patches of one attribute (here on a throwaway class)
    holder = type("Holder", (), {"method": lambda self: "lavis"})
    _patch.replace(holder, "method", lambda self: "first", "first.patch")
    with pytest.raises(compat.PatchConflict, match=r"already patched by 'first\.patch'.*'second\.patch'"):
        _patch.replace(holder, "method", lambda self: "second", "second.patch")
    assert holder().method() == "first"
    assert _patch.original(holder, "method")(holder()) == "lavis"


def test_missing_target_is_a_clear_error() -> None:
    patch = _patch.Patch("x.missing", "lavis.runners.runner_base:RunnerBase.no_such_method",
                         "test", "lavis_ext.compat.logger_sync:patch_synchronize")
    with pytest.raises(compat.PatchTargetError, match="x.missing.*RunnerBase.no_such_method"):
        _patch.apply_patch(patch)


def test_lr_schedulers_are_registered() -> None:
    from lavis_ext.runners import schedulers

    for name in (*compat.SCHEDULERS, schedulers.COSINE, schedulers.STEP):
        assert callable(registry.get_lr_scheduler_class(name)), name


def test_at_most_max_lavis_changes_all_documented() -> None:
    changes = compat.lavis_changes()
    assert len(changes) <= compat.MAX_LAVIS_CHANGES
    with open(os.path.join(REPO_ROOT, "docs", "compat.md"), encoding="utf-8") as f:
        doc = f.read()
    for patch in compat.PATCHES:  # every record, active on this stack or not
        assert f"`{patch.target}`" in doc, patch.target


@pytest.mark.parametrize("installed", ["1.0.3", None])
def test_other_lavis_versions_are_refused(monkeypatch: pytest.MonkeyPatch, installed: str | None) -> None:
    def version(name: str) -> str:
        assert name == "salesforce-lavis"
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(compat.UnsupportedLavisVersion, match=r"salesforce-lavis\) 1\.0\.2 only") as error:
        compat.check_lavis_version()
    assert ("1.0.3 is installed" if installed else "no 'salesforce-lavis' distribution metadata") in str(error.value)
    with pytest.raises(compat.UnsupportedLavisVersion):
        compat.apply_all()


def test_the_installed_lavis_passes_the_check() -> None:
    assert compat.lavis_version() == compat.SUPPORTED_LAVIS
    compat.check_lavis_version()


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_list_is_readable_without_lavis_or_torch() -> None:
    result = _run("import sys, json, lavis_ext.compat as c\n"
                  "print(json.dumps([len(c.PATCHES), [m for m in ('torch', 'lavis') if m in sys.modules]]))")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [len(compat.PATCHES), []]


def test_unsupported_lavis_keeps_import_lavis_working_and_raises_on_use() -> None:
    code = """
import importlib.metadata, json, warnings
real = importlib.metadata.version
importlib.metadata.version = lambda name: "1.0.3" if name == "salesforce-lavis" else real(name)
import lavis_ext
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import lavis  # must not fail
from lavis.common.registry import registry
report = {"warned": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
          "exp_blip": registry.get_model_class("exp_blip") is not None}
for attempt in ("ensure", "models"):
    try:
        lavis_ext.ensure_registered() if attempt == "ensure" else lavis_ext.models
    except lavis_ext.RegistrationError as error:
        report[attempt] = [str(error), type(error.__cause__).__name__]
print(json.dumps(report))
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert len(report["warned"]) == 1 and "1.0.2 only" in report["warned"][0]
    assert report["exp_blip"] is False
    for attempt in ("ensure", "models"):
        message, cause = report[attempt]
        assert "salesforce-lavis 1.0.3 is installed" in message and "1.0.2" in message
        assert cause == "UnsupportedLavisVersion"
    assert lavis_ext.ensure_registered() is None  # this process: LAVIS 1.0.2, registered
