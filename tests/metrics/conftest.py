"""Small tensors here: every test runs on one torch thread (fixture in tests/conftest.py)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
