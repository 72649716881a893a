"""Test doubles shared by several test folders (imported as ``support``; see pytest.ini)."""
