"""Test-wide settings: no hub access, and generated model files cached once per session."""
import os

import pytest
import torch

# Tests must never reach a model hub; the plugin's offline paths are what is under test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def lavis_ext_cache(tmp_path_factory):
    """A fresh cache for generated tiny models, shared by the whole session."""
    previous = os.environ.get("LAVIS_EXT_CACHE")
    path = os.environ.get("LAVIS_EXT_TEST_CACHE") or str(tmp_path_factory.mktemp("lavis_ext_cache"))
    os.environ["LAVIS_EXT_CACHE"] = path
    yield path
    if previous is None:
        os.environ.pop("LAVIS_EXT_CACHE", None)
    else:
        os.environ["LAVIS_EXT_CACHE"] = previous


@pytest.fixture()
def one_torch_thread():
    """Small tensors: one intra-op thread is faster than several on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def plain_process(monkeypatch: pytest.MonkeyPatch):
    """No launcher variables: what ``python train.py`` sees."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "LAVIS_EXT_DIST_BACKEND"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def tiny_captioner():
    """The tiny Exp-BLIP as `describe`, `serve` and the pseudo-captioner load it (short greedy
    captions, to keep the tests fast)."""
    from lavis_ext.describe.captioner import load_captioner

    captioner = load_captioner("exp_blip:tiny")
    captioner.generation.update(num_beams=1, max_length=20)
    return captioner
