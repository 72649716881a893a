"""lavis_ext.io: the one atomic writer and the one rule for relative config paths."""
import os
from pathlib import Path

import pytest

from lavis_ext.io import (atomic_save_torch, atomic_write, atomic_write_bytes, atomic_write_text,
                          config_root, resolve_path)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "old")
    assert target.read_text() == "old"

    def half_then_crash(handle):
        handle.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["out.json"]
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_torch_objects_are_saved_atomically(tmp_path):
    import torch
    target = tmp_path / "checkpoint_0.pth"
    atomic_save_torch({"w": torch.ones(3)}, target)
    assert torch.load(target, weights_only=True)["w"].tolist() == [1.0, 1.0, 1.0]
    assert os.listdir(tmp_path) == ["checkpoint_0.pth"]


def test_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("a/../b.json") == tmp_path / "b.json"
    assert resolve_path("x", base="/data") == Path("/data/x")
    assert resolve_path("/abs/y", base="/data") == Path("/abs/y")
    assert resolve_path("~/z") == Path.home() / "z"
    project = tmp_path / "repo"
    (project / "projects" / "pipeline").mkdir(parents=True)
    assert config_root(project / "projects" / "pipeline" / "paper.yaml") == project
    assert config_root(tmp_path / "mine" / "pipeline.yaml") == tmp_path / "mine"
