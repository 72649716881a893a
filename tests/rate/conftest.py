"""The rating kit fixture (files written by support.rating_kit)."""
import pytest

from support.rating_kit import KitFiles, write_kit


@pytest.fixture
def kit_files(tmp_path) -> KitFiles:
    return write_kit(tmp_path / "kit")
