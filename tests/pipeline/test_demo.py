"""A reduced end-to-end run of the whole method: few images, one epoch per stage."""
import json
import os
import subprocess
import sys


def _demo(workdir, *extra):
    env = {**os.environ, "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}
    return subprocess.run([sys.executable, "-m", "lavis_ext", "demo", "--quick", "--workdir",
                           str(workdir), *extra], capture_output=True, text=True, env=env,
                          timeout=900)


def test_quick_demo_runs_every_stage_and_resumes(tmp_path):
    work = tmp_path / "demo"
    first = _demo(work)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "STAND-IN" in first.stdout, "the demo says plainly that the LLM is a stand-in"
    for step in ("data", "synthesize", "train-au-blip", "train-emot-blip", "pseudo-au",
                 "pseudo-emotion", "fuse", "train-exp-blip", "evaluate"):
        assert (work / ".steps" / f"{step}.json").exists(), step
    results = json.loads((work / "results.json").read_text())
    assert set(results) == {"AU-BLIP on emotionet test", "Emot-BLIP on affectnet test",
                            "Exp-BLIP on emotionet test", "Exp-BLIP on affectnet test"}
    for result in results.values():
        assert result["per_sample"] and all(isinstance(s["caption"], str)
                                            for s in result["per_sample"])
        assert "au_f1_macro" in result["shuffled"]
    fused = json.loads((work / "captions" / "affectnet_train.json").read_text())
    assert all(r["captions"].get("fuse") and r["captions"].get("au-pseudo") for r in fused)
    assert "AU F1" in first.stdout and "vs shuffled" in first.stdout

    again = _demo(work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("[skip]") == 9 and "[step]" not in again.stdout

    # Other settings in the same workdir would show stale models: refused, --fresh named.
    other = _demo(work, "--seed", "1")
    assert other.returncode == 2 and "--fresh" in other.stderr, other.stderr[-2000:]
    assert "[skip]" not in other.stdout
