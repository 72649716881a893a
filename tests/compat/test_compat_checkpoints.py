"""load_pretrained: False, clear missing-file errors, weights_only loading and atomic saves."""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import compat_toy
from lavis.models.base_model import BaseModel
from lavis_ext.compat import _patch
from lavis_ext.compat.checkpoints import CHECKPOINT_MODULES, atomic_save, safe_load


def _cfg(**entries: object):
    return OmegaConf.create({"arch": compat_toy.NAME, "dim": 8, **entries})


def test_load_pretrained_false_skips_loading() -> None:
    model = compat_toy.ToyRegression.from_config(_cfg(load_finetuned=False, load_pretrained=False))
    assert isinstance(model, compat_toy.ToyRegression)


def test_stock_lavis_fails_on_load_pretrained_false() -> None:
    """Documents the LAVIS 1.0.2 bug the patch replaces (and that the original stays reachable)."""
    stock = _patch.original(BaseModel, "load_checkpoint_from_config")
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


def test_checkpoint_with_pickled_object_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The switch older torch versions behave like by default: plain torch.load would unpickle.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    sentinel = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": compat_toy.ToyRegression().state_dict(), "extra": _Payload(sentinel)}, path)

    with pytest.raises(pickle.UnpicklingError, match=r"evil\.pth: refused to load"):
        compat_toy.ToyRegression().load_checkpoint(str(path))
    for name in CHECKPOINT_MODULES:
        module = importlib.import_module(name)
        with pytest.raises(pickle.UnpicklingError):
            module.torch.load(str(path), map_location="cpu")
    with pytest.raises(pickle.UnpicklingError):
        safe_load(str(path), weights_only=False)
    assert not sentinel.exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_0.pth"
    atomic_save({"epoch": 0}, path)
    assert safe_load(path) == {"epoch": 0}
    with pytest.raises(Exception):
        atomic_save({"epoch": 1, "bad": lambda: None}, path)
    assert safe_load(path) == {"epoch": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_0.pth"]
