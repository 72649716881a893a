"""train.py and evaluate.py: LAVIS-style entry points callable in-process through main(argv)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_DIR = REPO_ROOT / "tests" / "compat"
for entry in (str(REPO_ROOT), str(TOY_DIR)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import compat_toy  # noqa: E402  (the toy model, dataset and task from tests/compat)
import evaluate  # noqa: E402
import train  # noqa: E402


@pytest.fixture(autouse=True)
def _plain_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)


def _metrics(output_dir: Path) -> dict:
    (job,) = compat_toy.job_dirs(output_dir)
    return json.loads((job / "result" / "test_metrics.json").read_text())


def test_train_options_override_the_yaml(tmp_path: Path) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 3})
    assert train.main(["--cfg-path", str(cfg), "--options", "run.max_epoch=1", f"run.output_dir={tmp_path / 'o'}"]) == 0
    (job,) = compat_toy.job_dirs(tmp_path / "o")
    assert [p.name for p in job.glob("checkpoint_*.pth")] == ["checkpoint_0.pth"]
    assert json.loads((job / "log.txt").read_text().split("\n}\n")[0] + "\n}")["run"]["max_epoch"] == 1


def test_evaluate_uses_the_configured_weights(tmp_path: Path) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"max_epoch": 2, "init_lr": 0.1})
    train.main(["--cfg-path", str(cfg), "--options", f"run.output_dir={tmp_path / 'train'}"])
    (job,) = compat_toy.job_dirs(tmp_path / "train")
    ckpt = job / "checkpoint_1.pth"

    common = ["--cfg-path", str(cfg), "--options", "run.test_splits=[test]"]
    assert evaluate.main(common + [f"run.output_dir={tmp_path / 'fresh'}"]) == 0
    assert evaluate.main(
        common + [f"run.output_dir={tmp_path / 'tuned'}", "model.load_finetuned=True", f"model.finetuned={ckpt}"]
    ) == 0
    fresh, tuned = _metrics(tmp_path / "fresh"), _metrics(tmp_path / "tuned")
    assert fresh["n"] == tuned["n"] == 64
    assert tuned["mse"] < fresh["mse"]
    (tuned_job,) = compat_toy.job_dirs(tmp_path / "tuned")
    assert not list(tuned_job.glob("checkpoint_*.pth"))  # evaluation does not train


def test_unknown_runner_is_named(tmp_path: Path) -> None:
    cfg = compat_toy.write_run_config(tmp_path, run={"runner": "runner_nope"})
    with pytest.raises(ValueError, match=r"run\.runner='runner_nope'.*runner_base"):
        train.main(["--cfg-path", str(cfg)])


def test_missing_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--cfg-path", str(tmp_path / "absent.yaml")])
    assert info.value.code == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_scripts_run_from_the_command_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), "--cfg-path", str(tmp_path / "absent.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "configuration file not found" in proc.stderr
