"""A reduced end-to-end run of the whole method (`expblip demo --quick`), then a tiny config
run on what it wrote, as the docs tell a new user to do."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lavis_ext.method.recipe import method_steps

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}


def _demo(cwd, *extra):
    return subprocess.run([sys.executable, "-m", "lavis_ext", "demo", "--quick", *extra],
                          capture_output=True, text=True, env=ENV, timeout=1200, cwd=cwd)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_quick_demo_runs_every_step_resumes_and_feeds_the_tiny_configs(tmp_path):
    work = tmp_path / "demo_output"  # the default --workdir, which the tiny configs read
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "STAND-IN" in first.stdout, "the demo says plainly that the LLM is a stand-in"
    steps = ["data"] + [s.name for s in method_steps()]  # the pipeline's own table
    assert "concat" in steps and "train-mix-blip" not in steps
    for step in steps:
        assert (work / ".steps" / f"{step}.json").exists(), step
    # LAVIS's config dumps go to the log file, not to the console
    assert "Running Parameters" not in first.stdout
    log = (work / "demo.log").read_text()
    assert "Running Parameters" in log
    # one console line per step, with its counts; training lines and progress go to the log
    step_lines = [line for line in first.stdout.splitlines() if line.startswith("[step] ")]
    assert [line.split()[1] for line in step_lines] == steps
    assert all(" ... done (" in line for line in step_lines), step_lines
    assert "Train: data epoch" not in first.stdout and "Train: data epoch" in log
    assert "WARNING" not in first.stdout + first.stderr
    synthesized = next(line for line in step_lines if line.startswith("[step] synthesize "))
    assert "au-rule" in synthesized and "captions" in synthesized
    results = json.loads((work / "results.json").read_text())
    assert set(results) == {"AU-BLIP on emotionet test", "Emot-BLIP on affectnet test",
                            "Exp-BLIP on emotionet test", "Exp-BLIP on affectnet test"}
    for result in results.values():
        assert result["per_sample"] and all(isinstance(s["caption"], str)
                                            for s in result["per_sample"])
        assert "au_f1_macro" in result["shuffled"]
    fused = json.loads((work / "captions" / "affectnet_train.json").read_text())
    assert all(r["captions"].get("fuse") and r["captions"].get("au-pseudo")
               and r["captions"].get("concat") for r in fused)
    assert "AU F1" in first.stdout and "vs shuffled" in first.stdout

    again = _demo(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("[skip]") == len(steps) and "[step]" not in again.stdout

    # Other settings in the same workdir would show stale models: refused, --fresh named.
    other = _demo(tmp_path, "--seed", "1")
    assert other.returncode == 2, other.stderr[-2000:]
    assert other.stderr.startswith("expblip demo: error: --workdir") and "--fresh" in other.stderr
    assert "[skip]" not in other.stdout

    # A tiny config runs right after the demo, from the same folder.
    tiny = subprocess.run([sys.executable, str(REPO / "train.py"), "--cfg-path",
                           str(REPO / "projects" / "au_blip" / "stage1_tiny.yaml")],
                          capture_output=True, text=True, env=ENV, timeout=900, cwd=tmp_path)
    assert tiny.returncode == 0, tiny.stdout[-3000:] + tiny.stderr[-3000:]
    assert list((work / "runs" / "au_blip" / "stage1").glob("*/checkpoint_0.pth"))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_demo_with_cot_runs_the_chain_of_thought_path(tmp_path):
    """--cot: rule CoTs for every record (pseudo captions fill the missing aspect), Exp-BLIP
    fine-tuned on them from its stage-2 checkpoint, and its CoT read back by parts."""
    first = _demo(tmp_path, "--cot", "--workdir", str(tmp_path / "w"))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    steps = [line.split()[1] for line in first.stdout.splitlines()
             if line.startswith("[step] ")]
    assert steps == ["data"] + [s.name for s in method_steps(cot=True)]
    assert steps.index("cot") > steps.index("pseudo-emotion")
    for name in ("emotionet", "affectnet"):
        records = json.loads((tmp_path / "w" / "captions" / f"{name}_train.json").read_text())
        cots = [r["captions"].get("cot-rule") for r in records]
        assert all(c and c[0].startswith("**Key Observations:**") for c in cots), name
    from omegaconf import OmegaConf

    # stage 2 only, from Exp-BLIP's newest stage-2 checkpoint
    assert not (tmp_path / "w" / "configs" / "cot_blip" / "stage1.yaml").exists()
    cot = OmegaConf.load(tmp_path / "w" / "configs" / "cot_blip" / "stage2.yaml")
    exp = sorted((tmp_path / "w" / "runs" / "exp_blip" / "stage2").glob("*/checkpoint_*.pth"))
    assert cot.model.pretrained in {str(p) for p in exp}
    assert cot.datasets.facial_caption_mix.caption_kinds == ["cot-rule"]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert {"Exp-BLIP (CoT) on emotionet test", "Exp-BLIP (CoT) on affectnet test"} <= set(
        results)


def test_learning_bar_sets_the_demo_exit_code(capsys):
    from lavis_ext.method.demo import learning_bar

    def summary(f1, shuffled):
        return {"Exp-BLIP on emotionet test": {"au_f1": f1, "au_f1_shuffled": shuffled}}

    assert learning_bar(summary(0.815, 0.284)) == 0
    assert "PASSED" in capsys.readouterr().out
    assert learning_bar(summary(0.55, 0.2)) == 1  # not learned enough
    assert learning_bar(summary(0.9, 0.45)) == 1  # the control is not near chance
    assert "FAILED" in capsys.readouterr().out
