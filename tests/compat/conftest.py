"""Shared fixtures for the LAVIS compatibility tests: the toy plugin and process-group helpers."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for entry in (str(REPO_ROOT), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import torch.distributed as dist  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def single_rank_env(monkeypatch: pytest.MonkeyPatch):
    """The environment ``torch.distributed.run`` gives rank 0 of a one-process job."""
    for key, value in {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LAVIS_EXT_DIST_BACKEND", raising=False)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def plain_process_env(plain_process):
    """No launcher variables: what ``python train.py`` sees (tests/conftest.py)."""
    yield
