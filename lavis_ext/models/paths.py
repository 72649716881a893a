"""Where model files come from: local paths named by config keys or environment variables.

Offline use is the normal path here: a weight file is looked up in the config, then in an
environment variable, and a missing file is reported with both names, never as a
traceback from inside the hub client.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LAVIS_EXT_CACHE"


class MissingModelFileError(FileNotFoundError):
    """A weight, config or tokenizer file the model needs is not on disk."""


def cache_dir() -> Path:
    """Directory for files the plugin generates (tiny models); ``$LAVIS_EXT_CACHE`` overrides."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lavis_ext")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def configured_path(value: str | os.PathLike | None, env: str | None) -> str | None:
    """The config value if set, else the environment variable's value, else None."""
    if value not in (None, ""):
        return os.path.expanduser(str(value))
    if env and os.environ.get(env):
        return os.path.expanduser(os.environ[env])
    return None


def require_file(path: str | os.PathLike | None, *, what: str, key: str,
                 env: str | None = None, directory: bool = False) -> Path:
    """Return ``path`` if it exists, else raise an error naming the key and variable to set."""
    how = f"set `{key}` in the model config" + (f" or the environment variable {env}" if env
                                                 else "")
    if path in (None, ""):
        raise MissingModelFileError(f"No {what} is configured: {how}.")
    resolved = Path(path).expanduser()
    ok = resolved.is_dir() if directory else resolved.exists()
    if not ok:
        kind = "directory" if directory else "file"
        raise MissingModelFileError(f"The {what} {kind} '{resolved}' does not exist: {how} "
                                    f"to a local copy.")
    return resolved
