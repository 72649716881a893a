"""Fixtures for caption synthesis tests: a local LLM server and a secret test key."""
from __future__ import annotations

import pytest

from captions_testlib import SECRET
from support.llm_server import FaultPlan, FaultyLLMServer


@pytest.fixture
def server():
    with FaultyLLMServer() as srv:
        yield srv


@pytest.fixture
def make_server():
    started = []

    def make(**kw) -> FaultyLLMServer:
        faults = kw.pop("faults", None)
        srv = FaultyLLMServer(faults=FaultPlan(**faults) if isinstance(faults, dict) else faults,
                             **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
