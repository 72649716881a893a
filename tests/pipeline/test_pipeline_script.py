"""run_scripts/pipeline.py (the paper's pipeline on prepared datasets) up to its LLM step."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_synthesizes_and_skips_finished_steps(tmp_path):
    from lavis_ext.captions.local_server import LocalLLMServer
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.synthetic.writers import make_synthetic

    for name in ("emotionet", "affectnet"):
        make_synthetic(name, tmp_path / "data" / name, 12, seed=1, variant="csv")
        prepare_dataset(name, tmp_path / "data" / name, tmp_path / "prepared" / name)
    with LocalLLMServer() as server:
        config = tmp_path / "pipeline.yaml"
        config.write_text(json.dumps({"pipeline": {
            "workdir": str(tmp_path / "work"), "nproc_per_node": 1, "device": "cpu",
            "au_datasets": {"emotionet": {"prepared": str(tmp_path / "prepared" / "emotionet"),
                                          "images": str(tmp_path / "data" / "emotionet")}},
            "emotion_datasets": {"affectnet": {
                "prepared": str(tmp_path / "prepared" / "affectnet"),
                "images": str(tmp_path / "data" / "affectnet")}},
            "llm": {"model": "stand-in", "base_url": server.base_url}, "concurrency": 4,
            "models": {m: {"stage1": str(REPO / "projects" / m / "stage1_tiny.yaml"),
                           "stage2": str(REPO / "projects" / m / "stage2_tiny.yaml")}
                       for m in ("au_blip", "emot_blip", "exp_blip")}}}))
        command = [sys.executable, str(REPO / "run_scripts" / "pipeline.py"), "--config",
                   str(config), "--until", "synthesize"]
        env = {**os.environ, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        calls = server.chat_requests
        assert calls > 0
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert second.returncode == 0 and "[skip] synthesize" in second.stdout
        assert server.chat_requests == calls, "a rerun pays for nothing twice"
    records = json.loads((tmp_path / "work" / "captions" / "emotionet_train.json").read_text())
    assert all(r["captions"].get("au-rule") or not any(v == 1 for v in r["aus"].values())
               for r in records)
    assert any(r["captions"].get("au-llm") for r in records)
    emotions = json.loads((tmp_path / "work" / "captions" / "affectnet_test.json").read_text())
    assert all(r["captions"].get("emotion-rule") for r in emotions)
