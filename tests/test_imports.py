"""The plain layers and the light commands import without torch, LAVIS or transformers, and
``import lavis_ext`` still registers everything once LAVIS is imported (in fresh processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lavis_ext

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lavis", "transformers")
PLAIN_LAYERS = ("lavis_ext.facs", "lavis_ext.data", "lavis_ext.captions", "lavis_ext.metrics")
LIGHT_COMMANDS = ("prepare", "make-synthetic", "synthesize", "evaluate")


def run_python(code: str, *flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_plain_layers_leave_torch_lavis_and_transformers_out() -> None:
    # The acceptance line itself, then every submodule of the plain layers.
    code = f"""
import importlib, json, pkgutil, sys
import {", ".join(PLAIN_LAYERS)}
heavy = {HEAVY!r}
report = {{"top": [m for m in heavy if m in sys.modules]}}
for package in {PLAIN_LAYERS[1:]!r}:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)
        loaded = [m for m in heavy if m in sys.modules]
        if loaded:
            report[info.name] = loaded
            break
print(json.dumps(report))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"top": []}


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in LIGHT_COMMANDS)])
def test_light_commands_start_without_torch(argv: list[str]) -> None:
    # sys.modules[name] = None makes any import of that name fail, so the command must not try.
    code = f"""
import sys
for name in {HEAVY!r}:
    sys.modules[name] = None
from lavis_ext.cli import main
sys.exit(main({argv!r}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "usage: expblip" in result.stdout
    assert "Traceback" not in result.stderr


def test_prepare_runs_without_torch_unless_faces_are_aligned(tmp_path) -> None:
    # --faces align is the one part of `prepare` that needs torch; it is imported only then.
    code = f"""
import sys
from lavis_ext.data.synthetic import make_synthetic
make_synthetic("rafdb", {str(tmp_path / 'raw')!r}, 6, seed=0, image_size=40)
for name in {HEAVY!r}:
    sys.modules[name] = None
from lavis_ext.cli import main
code = main(["prepare", "rafdb", "--root", {str(tmp_path / 'raw')!r}, "--out",
             {str(tmp_path / 'out')!r}, "--no-progress"])
print("faces module loaded:", "lavis_ext.describe.prepare_faces" in sys.modules)
sys.exit(code)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "faces module loaded: False" in result.stdout
    assert (tmp_path / "out" / "train.json").is_file()


REGISTERED = """
import json
from lavis.common.registry import registry
def ours():
    m = registry.mapping
    return {section: sorted(k for k, v in m[section].items() if v.__module__.startswith("lavis_ext."))
            for section in ("model_name_mapping", "builder_name_mapping", "task_name_mapping",
                            "processor_name_mapping", "runner_name_mapping",
                            "lr_scheduler_name_mapping")}
"""

WALK_ALL = """
import importlib, pkgutil
for package in ("lavis_ext.processors", "lavis_ext.datasets", "lavis_ext.models", "lavis_ext.tasks",
                "lavis_ext.runners"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), package + "."):
        importlib.import_module(info.name)
"""


@pytest.mark.slow
def test_import_lavis_ext_then_lavis_registers_everything_without_warnings() -> None:
    # -W error::FutureWarning: the known third-party FutureWarnings are filtered, no other is.
    code = f"""
import lavis_ext
from lavis.models import load_model_and_preprocess  # first LAVIS import: the hook runs here
{REGISTERED}
after_hook = ours()
{WALK_ALL}
print(json.dumps({{"hook": after_hook, "all": ours(), "registered": lavis_ext._registered}}))
"""
    result = run_python(code, "-W", "error::FutureWarning")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["registered"] is True
    assert report["hook"] == report["all"]
    assert all(report["all"][section] for section in report["all"]), report["all"]
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.slow
def test_lavis_imported_first_and_model_subpackage_first_register_too() -> None:
    code = f"""
import lavis
{REGISTERED}
before = ours()
import lavis_ext  # LAVIS is already imported: the hook runs at once
print(json.dumps({{"before": before, "after": ours()}}))
"""
    result = run_python(code)
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.46"):
        # The current stack (docs/install.md): LAVIS's own modules import names that only
        # lavis_ext puts back into transformers.modeling_utils, so lavis_ext must come first.
        assert result.returncode != 0
        assert "apply_chunking_to_forward" in result.stderr
        first = None
    else:
        assert result.returncode == 0, result.stderr
        first = json.loads(result.stdout.strip().splitlines()[-1])
        assert not any(first["before"].values())
    code = f"""
import lavis_ext.models.exp_blip  # its own `import lavis` runs the hook half-way through
{REGISTERED}
print(json.dumps(ours()))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    after = json.loads(result.stdout.strip().splitlines()[-1])
    if first is not None:
        assert after == first["after"]
    assert all(after.values()), after


def test_known_warnings_are_filtered_by_exact_message_only() -> None:
    # In a fresh process: pytest installs warning filters of its own around each test.
    code = """
import json, warnings
import lavis_ext
shown = []
for module, message in lavis_ext.KNOWN_THIRD_PARTY_WARNINGS:
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module, registry={})
        warnings.warn_explicit(message + " (and more)", FutureWarning, "x.py", 2, module=module,
                               registry={})
        warnings.warn_explicit(message, UserWarning, "x.py", 3, module=module, registry={})
        warnings.warn_explicit(message, FutureWarning, "x.py", 4, module="lavis_ext.models",
                               registry={})
    shown.append(sorted(w.lineno for w in caught))
print(json.dumps(shown))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown == [[2, 3, 4]] * len(lavis_ext.KNOWN_THIRD_PARTY_WARNINGS)


def test_pytest_ini_filters_the_same_warnings() -> None:
    import configparser
    import re

    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO_ROOT / "pytest.ini")
    lines = [x for x in config["pytest"]["filterwarnings"].splitlines() if x.strip()]
    assert lines == [f"ignore:{re.escape(message)}\\Z:FutureWarning:{re.escape(module)}\\Z"
                     for module, message in lavis_ext.KNOWN_THIRD_PARTY_WARNINGS]
