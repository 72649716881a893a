import json

import pytest

from lavis_ext.method.steps import FINISHED, Steps, train_stage


def test_finished_steps_are_skipped(tmp_path):
    calls = []
    first = Steps(tmp_path, echo=lambda _: None)
    assert first.run("a", lambda x: calls.append(x) or {"value": x}, 1) == {"value": 1}
    again = Steps(tmp_path, echo=lambda _: None)
    assert again.run("a", lambda x: calls.append(x) or {"value": x}, 2) == {"value": 1}
    assert calls == [1]
    assert json.loads((tmp_path / ".steps" / "a.json").read_text())["result"] == {"value": 1}


def test_crashed_training_resumes_from_its_newest_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run:\n  output_dir: {out}\n")
    seen = []
    import lavis_ext.entry as entry

    def killed(argv):  # the first attempt saves one checkpoint, then dies
        seen.append(argv)
        (out / "2026").mkdir(parents=True)
        (out / "2026" / "checkpoint_0.pth").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "train_main", killed)
    with pytest.raises(KeyboardInterrupt):
        train_stage(cfg)
    assert not any("resume_ckpt_path" in a for a in seen[0])
    from lavis_ext.models.checkpoint import newest_checkpoint

    assert newest_checkpoint(out).endswith("checkpoint_0.pth")
    assert not (out / FINISHED).exists()
    monkeypatch.setattr(entry, "train_main", lambda argv: seen.append(argv))
    train_stage(cfg)
    assert any(a.startswith("run.resume_ckpt_path=") and a.endswith("checkpoint_0.pth")
               for a in seen[1])
    assert (out / FINISHED).exists()


def test_a_finished_stage_is_not_trained_again_unless_its_budget_grows(tmp_path, monkeypatch):
    """A step killed in its second stage reruns its first: that must not resume a finished
    run (the runner refuses a resume at its last epoch)."""
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"run:\n  output_dir: {out}\n  max_epoch: 1\n")
    seen = []
    import lavis_ext.entry as entry

    monkeypatch.setattr(entry, "train_main", lambda argv: seen.append(argv))
    train_stage(cfg)
    (out / "2026").mkdir(parents=True)
    (out / "2026" / "checkpoint_0.pth").write_bytes(b"x")
    assert train_stage(cfg) == str(out) and len(seen) == 1, "finished: not trained again"
    train_stage(cfg, ["run.max_epoch=2"])  # a larger budget resumes the finished run
    assert len(seen) == 2 and any(a.endswith("checkpoint_0.pth") for a in seen[1])


def test_captured_step_prints_one_console_line_and_logs_the_rest(tmp_path, capfd):
    import logging
    import subprocess
    import sys

    log = tmp_path / "run.log"
    console = logging.StreamHandler()  # a console handler, as the demo sets one up
    logging.getLogger().addHandler(console)

    def noisy(n):
        print("training line 1")
        subprocess.run([sys.executable, "-c", "import sys; print('child out'); "
                        "print('child err', file=sys.stderr)"], check=True)
        logging.getLogger("lavis_ext.test").warning("record 7: no caption")
        return {"done": n}

    try:
        steps = Steps(tmp_path, capture=log, summarize=lambda name, r: f"{r['done']} items")
        assert steps.run("noisy", noisy, 3) == {"done": 3}
    finally:
        logging.getLogger().removeHandler(console)
    out = capfd.readouterr()
    assert out.out.startswith("[step] noisy ... done (") and out.out.count("\n") == 1
    assert "3 items; 1 warnings in run.log" in out.out
    assert "no caption" not in out.out + out.err and "training line 1" not in out.out
    assert "training line 1" in log.read_text()
    assert "child out" not in out.out and "child err" not in out.err
    assert "child out" in log.read_text() and "child err" in log.read_text()
    assert console.level == logging.NOTSET  # the console handler is restored


def test_captured_step_that_fails_says_where_its_output_is(tmp_path, capsys):
    import pytest

    def broken():
        print("the traceback's context")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Steps(tmp_path, capture=tmp_path / "run.log").run("broken", broken)
    out = capsys.readouterr().out
    assert "[step] broken ... failed after" in out and str(tmp_path / "run.log") in out
    assert not (tmp_path / ".steps" / "broken.json").exists()
