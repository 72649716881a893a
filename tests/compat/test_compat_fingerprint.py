"""After `import lavis_ext` and using it, LAVIS is as LAVIS shipped but for the documented records.

Two child processes fingerprint every function and class of the imported ``lavis.*`` modules
(fingerprint_lavis.py): one imports the plugin, builds and runs the tiny Exp-BLIP of both stages
and trains with the plugin's runner; the other imports the same LAVIS modules alone. Every
difference must be one of ``compat.lavis_changes()`` (at most ``compat.MAX_LAVIS_CHANGES``,
each listed in docs/compat.md, see test_compat_apply.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lavis_ext.compat as compat

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def _start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    log = open(Path(args[1]).with_suffix(".log"), "w")  # a file, not a pipe: no filled-pipe stall
    return subprocess.Popen([sys.executable, str(HERE / "fingerprint_lavis.py"), *args], cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _result(proc: subprocess.Popen, out: Path) -> dict:
    proc.wait(timeout=400)
    assert proc.returncode == 0, out.with_suffix(".log").read_text()[-4000:]
    return json.loads(out.read_text())


def test_lavis_stays_stock_after_using_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    plugin_out, stock_out = tmp_path / "plugin" / "fp.json", tmp_path / "stock.json"
    # the two processes run side by side
    plugin_proc, stock_proc = _start("plugin", str(plugin_out)), _start("stock", str(stock_out))
    stock, plugin = _result(stock_proc, stock_out), _result(plugin_proc, plugin_out)
    assert plugin["used"]["runner"] == "ExpBlipRunner" and plugin["used"]["captions"] == 2
    assert set(plugin["modules"]) <= set(stock["modules"]), set(plugin["modules"]) - set(stock["modules"])

    ours, theirs = plugin["fingerprint"], stock["fingerprint"]
    theirs = {k: v for k, v in theirs.items() if k.split(":")[0] in set(plugin["modules"])}
    assert len(theirs) > 3000  # every function and class, not a sample
    differences = sorted(key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key))
    allowed = set(compat.lavis_changes())
    assert set(differences) <= allowed, [(k, ours.get(k), theirs.get(k)) for k in differences if k not in allowed]
    assert len(differences) <= compat.MAX_LAVIS_CHANGES
    # the allowed records do apply (the test would also catch them silently going away)
    assert set(differences) == allowed, (differences, allowed)
    # LAVIS's OPT class is as shipped on every stack: the plugin's models build their own
    # subclass of it (lavis_ext/models/opt.py), and the plugin process did generate with it
    opt = "lavis.models.blip2_models.modeling_opt:OPTForCausalLM"
    assert f"{opt}.prepare_inputs_for_generation" in ours and f"{opt}.__bases__" in ours
    assert not [k for k in differences if k.startswith("lavis.models.blip2_models.modeling_opt:")]
