"""A persistent, content-addressed cache of LLM answers (SQLite, WAL mode).

The key is a hash of the model, the messages and the request parameters (plus the attempt
number, so that a retry after a rejected answer is its own entry). Every answer is stored the
moment it arrives, before it is validated: a rejected answer was paid for too, and a rerun
must not pay for it again. API keys are never part of a key or of a stored row.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    answer TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    via TEXT NOT NULL DEFAULT 'online',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    input_file_id TEXT NOT NULL,
    keys TEXT NOT NULL,
    status TEXT NOT NULL,
    ingested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
"""


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any],
              variant: int = 0) -> str:
    """sha256 of the canonical JSON of (model, messages, params[, variant]).

    Variant 0 is keyed as before variants existed, so older caches stay valid; variant
    v > 0 (another answer to the same prompt) is its own entry even when no seed is sent.
    """
    body: dict[str, Any] = {"model": model, "messages": messages, "params": params}
    if variant:
        body["variant"] = int(variant)
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    answer: str | None
    prompt_tokens: int
    completion_tokens: int
    via: str


class AnswerCache:
    """One SQLite file; safe to share between a run and a reader (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise RuntimeError(f"cannot open the LLM cache {self.path}: {err} (is it an "
                               f"SQLite file written by lavis_ext?)") from None

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute("SELECT answer, prompt_tokens, completion_tokens, via FROM "
                               "answers WHERE key = ?", (key,)).fetchone()
        return CachedAnswer(*row) if row else None

    def put(self, key: str, model: str, request: dict[str, Any], answer: str | None,
            prompt_tokens: int, completion_tokens: int, via: str = "online") -> None:
        """Store an answer; committed at once so that a crash right after loses nothing."""
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, model, json.dumps(request, ensure_ascii=False), answer, int(prompt_tokens),
             int(completion_tokens), via, time.time()))

    def contains(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._db.execute(
                f"SELECT key FROM answers WHERE key IN ({marks})", chunk))
        return found

    def add_rejection(self, key: str, reason: str) -> None:
        self._db.execute("INSERT INTO rejections VALUES (?, ?, ?)", (key, reason, time.time()))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    # --- Batch API bookkeeping: a resumed run polls its batch instead of paying again. ---
    def add_batch(self, batch_id: str, input_file_id: str, keys: list[str], status: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, 0, ?)",
                         (batch_id, input_file_id, json.dumps(keys), status, time.time()))

    def update_batch(self, batch_id: str, status: str, ingested: bool = False) -> None:
        self._db.execute("UPDATE batches SET status = ?, ingested = ? WHERE id = ?",
                         (status, int(ingested), batch_id))

    def open_batches(self) -> list[tuple[str, list[str], str]]:
        """Batches submitted but not yet read back: (id, keys, last known status)."""
        rows = self._db.execute("SELECT id, keys, status FROM batches WHERE ingested = 0 "
                                "ORDER BY created").fetchall()
        return [(r[0], json.loads(r[1]), r[2]) for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
