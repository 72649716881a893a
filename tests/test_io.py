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


def test_read_json_list_names_the_flag_the_file_and_what_was_expected(tmp_path):
    from lavis_ext.errors import InputError
    from lavis_ext.io import read_json_list

    path = tmp_path / "p.json"
    with pytest.raises(InputError, match=f"--pred: file not found: {path}"):
        read_json_list(path, "{image_id, caption}", "--pred")
    path.write_text("{")
    with pytest.raises(InputError, match=r"--pred: .*p\.json: not valid JSON"):
        read_json_list(path, "{image_id, caption}", "--pred")
    path.write_text('{"a": 1}')
    with pytest.raises(InputError, match=r"expected a JSON list of \{image_id, caption\}, got dict"):
        read_json_list(path, "{image_id, caption}", "--pred")
    path.write_text('[1, {"a": 2}]')
    assert read_json_list(path, "rows", "--from") == [1, {"a": 2}]
