import json

from lavis_ext.method.steps import Steps, train_stage


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

    monkeypatch.setattr(entry, "train_main", lambda argv: seen.append(argv))
    train_stage(cfg)
    assert not any("resume_ckpt_path" in a for a in seen[0])
    (out / "2026").mkdir(parents=True)
    (out / "2026" / "checkpoint_0.pth").write_bytes(b"x")
    from lavis_ext.models.checkpoint import newest_checkpoint

    assert newest_checkpoint(out).endswith("checkpoint_0.pth")
    train_stage(cfg)
    assert any(a.startswith("run.resume_ckpt_path=") and a.endswith("checkpoint_0.pth")
               for a in seen[1])
