"""load_pretrained: False, clear missing-file errors (the plugin's models), weights_only loading
and atomic saves (the plugin's runners)."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import compat_toy
import train
from lavis.models.base_model import BaseModel
from lavis_ext.io import atomic_save_torch as atomic_save
from lavis_ext.runners.checkpoints import safe_load


def _cfg(**entries: object):
    return OmegaConf.create({"arch": compat_toy.NAME, "dim": 8, **entries})


def test_load_pretrained_false_skips_loading() -> None:
    model = compat_toy.ToyRegression.from_config(_cfg(load_finetuned=False, load_pretrained=False))
    assert isinstance(model, compat_toy.ToyRegression)


def test_stock_lavis_fails_on_load_pretrained_false() -> None:
    """Documents the LAVIS 1.0.2 bug the models' override fixes (LAVIS's method stays stock)."""
    stock = BaseModel.load_checkpoint_from_config
    assert stock.__module__ == "lavis.models.base_model"
    with pytest.raises(TypeError):
        stock(compat_toy.ToyRegression(), _cfg(load_finetuned=False, load_pretrained=False))


@pytest.mark.parametrize(
    "entries, key",
    [
        ({"load_finetuned": False, "load_pretrained": True, "pretrained": "KEEP"}, "model.pretrained"),
        ({"load_finetuned": True, "finetuned": "KEEP"}, "model.finetuned"),
    ],
)
def test_missing_checkpoint_names_file_and_key(tmp_path: Path, entries: dict, key: str) -> None:
    missing = tmp_path / "weights" / "absent.pth"
    entries = {k: (str(missing) if v == "KEEP" else v) for k, v in entries.items()}
    with pytest.raises(FileNotFoundError) as info:
        compat_toy.ToyRegression.from_config(_cfg(**entries))
    assert key in str(info.value) and str(missing) in str(info.value)


def test_unset_pretrained_path_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model\.pretrained .* is not set"):
        compat_toy.ToyRegression.from_config(_cfg(load_finetuned=False, load_pretrained=True))


def test_pretrained_and_finetuned_paths_load_weights(tmp_path: Path) -> None:
    source = compat_toy.ToyRegression()
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    for entries in (
        {"load_finetuned": False, "load_pretrained": True, "pretrained": str(path)},
        {"load_finetuned": True, "finetuned": str(path)},
    ):
        model = compat_toy.ToyRegression.from_config(_cfg(**entries))
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (entries, key)


class _Payload:
    """Unpickling this would create ``target``: a stand-in for code in a malicious checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    sentinel = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    model = compat_toy.ToyRegression()
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 0, "extra": _Payload(sentinel)}, path)
    return path, sentinel


def test_lavis_loaders_are_weights_only_by_torch_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the torch.load overlays went away: torch >= 2.6 defaults to weights_only=True."""
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    path, sentinel = _evil_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        compat_toy.ToyRegression().load_checkpoint(str(path))  # LAVIS's BaseModel.load_checkpoint
    assert not sentinel.exists()


def test_runner_resume_refuses_pickled_objects_even_when_torch_would_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain_process_env: None) -> None:
    # The switch older torch versions behave like by default: plain torch.load would unpickle.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, sentinel = _evil_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth: refused to load"):
        safe_load(str(path), weights_only=False)
    runner = train.build_runner(train.parse_args(["--cfg-path", str(compat_toy.write_run_config(tmp_path))]))
    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth"):
        runner._load_checkpoint(str(path))
    assert not sentinel.exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_0.pth"
    atomic_save({"epoch": 0}, path)
    assert safe_load(path) == {"epoch": 0}
    with pytest.raises(Exception):
        atomic_save({"epoch": 1, "bad": lambda: None}, path)
    assert safe_load(path) == {"epoch": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_0.pth"]
