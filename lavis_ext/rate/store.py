"""One SQLite file holds a rating kit and its ratings (standard library ``sqlite3``).

WAL journal with ``synchronous=FULL``, one connection and one transaction per request: a
rating is on disk before its request is answered, so killing the server (``kill -9``) or the
machine loses nothing that a rater was told was saved. One row per rater, item and model:
its correctness (1-10) and whether the rater picked that caption as the item's most or least
complete (the paper's protocol), or neither.

Blinding: items and captions are known to raters only by random ids made when the kit is
built; the model behind a caption id is never sent. Each rater gets their own order of items
and of the captions within an item, drawn from the kit's seed and the rater's name, so a
reload or a restart shows the same order again.
"""
from __future__ import annotations

import hashlib
import random
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from lavis_ext.errors import InputError
from lavis_ext.rate.kit import Item

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (model TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE items (item TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE,
                    image_id TEXT NOT NULL, dataset TEXT NOT NULL, image TEXT NOT NULL);
CREATE TABLE captions (caption TEXT PRIMARY KEY,
                       item TEXT NOT NULL REFERENCES items(item),
                       model TEXT NOT NULL REFERENCES models(model),
                       text TEXT NOT NULL, UNIQUE (item, model));
CREATE TABLE ratings (rater TEXT NOT NULL, item TEXT NOT NULL REFERENCES items(item),
                      model TEXT NOT NULL REFERENCES models(model),
                      correctness INTEGER NOT NULL CHECK (correctness BETWEEN 1 AND 10),
                      complete TEXT CHECK (complete IN ('most', 'least')),
                      updated REAL NOT NULL, PRIMARY KEY (rater, item, model));
"""
MAX_RATER_NAME = 80


class RatingRefused(ValueError):
    """A rating the kit cannot take; ``status`` is the HTTP answer, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Rating:
    rater: str
    item: str
    model: str
    correctness: int
    complete: str | None   # "most", "least" or None


def fingerprint(parts: Sequence[bytes]) -> str:
    """What a kit was built from (the files' bytes and the sampling flags), to refuse
    restarting a ratings file with other inputs."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class RatingStore:
    """The kit and its ratings in ``path``; every method opens its own connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- building ----------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def exists(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            with self.connect() as conn:
                return conn.execute("SELECT 1 FROM sqlite_master WHERE name='items'"
                                    ).fetchone() is not None
        except sqlite3.DatabaseError as err:
            raise InputError(f"--out {self.path}: not a ratings file ({err})") from None

    def create(self, items: Sequence[Item], models: Sequence[str], source: str,
               seed: str | None = None) -> None:
        """Write a new kit; the file must not hold one yet."""
        if self.exists():
            raise InputError(f"--out {self.path}: already holds a rating kit")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as conn:  # tables and rows in one transaction: all or none
            for statement in filter(str.strip, SCHEMA.split(";")):
                conn.execute(statement)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("source", source), ("seed", seed or secrets.token_hex(8)),
                ("created", str(time.time()))])
            conn.executemany("INSERT INTO models VALUES (?, ?)",
                             [(m, i) for i, m in enumerate(models)])
            for position, item in enumerate(items):
                item_id = "i" + secrets.token_hex(6)
                conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                             (item_id, position, item.image_id, item.dataset, item.image))
                conn.executemany("INSERT INTO captions VALUES (?, ?, ?, ?)", [
                    ("c" + secrets.token_hex(6), item_id, model, item.captions[model])
                    for model in models])

    def meta(self, key: str) -> str:
        """A value the kit was built with (``source``: the inputs' fingerprint; ``seed``)."""
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            raise InputError(f"--out {self.path}: not a ratings file made by expblip rate "
                             f"(no {key!r})")
        return row[0]

    # -- reading -----------------------------------------------------------------------------
    def models(self) -> list[str]:
        with self.connect() as conn:
            return [m for (m,) in conn.execute("SELECT model FROM models ORDER BY position")]

    def item_ids(self) -> list[str]:
        with self.connect() as conn:
            return [i for (i,) in conn.execute("SELECT item FROM items ORDER BY position")]

    def image_path(self, item: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT image FROM items WHERE item=?", (item,)).fetchone()
        return row[0] if row else None

    def order(self, rater: str) -> list[str]:
        """This rater's order of items (the same on every call and after a restart)."""
        return list(_shuffled(tuple(self.item_ids()), self.meta("seed"), rater))

    def next_item(self, rater: str) -> dict[str, Any]:
        """The rater's first item not fully rated, with its captions in the rater's order and
        what the rater already gave them (so a half-rated item resumes where it stopped)."""
        rater = check_rater(rater)
        order = self.order(rater)
        with self.connect() as conn:
            n_models = conn.execute("SELECT COUNT(*) FROM models").fetchone()[0]
            counts = dict(conn.execute("SELECT item, COUNT(*) FROM ratings WHERE rater=? "
                                       "GROUP BY item", (rater,)))
            done = sum(1 for item in order if counts.get(item, 0) >= n_models)
            progress = {"rater": rater, "done": done, "total": len(order)}
            pending = next((item for item in order if counts.get(item, 0) < n_models), None)
            if pending is None:
                return {**progress, "item": None}
            rows = conn.execute(
                "SELECT c.caption, c.text, r.correctness, r.complete FROM captions c LEFT JOIN "
                "ratings r ON r.item=c.item AND r.model=c.model AND r.rater=? WHERE c.item=? "
                "ORDER BY c.caption", (rater, pending)).fetchall()
        rows = _shuffled(tuple(rows), self.meta("seed"), f"{rater}\0{pending}")
        return {**progress, "item": {
            "item": pending, "image": f"/api/images/{pending}",
            "captions": [{"caption": cid, "text": text, "correctness": score,
                          "complete": complete}
                         for cid, text, score, complete in rows]}}

    def ratings(self) -> list[Rating]:
        with self.connect() as conn:
            rows = conn.execute("SELECT rater, item, model, correctness, complete FROM ratings "
                                "ORDER BY rater, item, model").fetchall()
        return [Rating(r, i, m, c, k) for r, i, m, c, k in rows]

    # -- writing -----------------------------------------------------------------------------
    def rate(self, rater: str, item: str, caption: str, correctness: int,
             complete: str | None) -> dict[str, Any]:
        """Store (or replace) one rating in its own committed transaction. Picking a caption
        as the most (or least) complete unpicks the rater's other caption of that item with
        the same label: one most and one least complete per rater and item."""
        rater = check_rater(rater)
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM items WHERE item=?", (item,)).fetchone() is None:
                raise RatingRefused(422, f"item {item!r} is not in this kit")
            row = conn.execute("SELECT model FROM captions WHERE caption=? AND item=?",
                               (caption, item)).fetchone()
            if row is None:
                raise RatingRefused(422, f"caption {caption!r} is not a caption of item "
                                         f"{item!r}")
            if complete is not None:
                conn.execute("UPDATE ratings SET complete=NULL WHERE rater=? AND item=? AND "
                             "complete=?", (rater, item, complete))
            conn.execute(
                "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rater, item, model) "
                "DO UPDATE SET correctness=excluded.correctness, complete=excluded.complete, "
                "updated=excluded.updated",
                (rater, item, row[0], correctness, complete, time.time()))
        return {"saved": True, "rater": rater, "item": item, "caption": caption}

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {"items": conn.execute("SELECT COUNT(*) FROM items").fetchone()[0],
                    "models": conn.execute("SELECT COUNT(*) FROM models").fetchone()[0],
                    "raters": conn.execute("SELECT COUNT(DISTINCT rater) FROM ratings"
                                           ).fetchone()[0],
                    "ratings": conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]}


def check_rater(name: Any) -> str:
    """A rater's name, trimmed; refused (422) when empty, too long or not text."""
    if not isinstance(name, str) or not name.strip():
        raise RatingRefused(422, "rater: expected a non-empty name")
    name = name.strip()
    if len(name) > MAX_RATER_NAME or any(ord(ch) < 32 for ch in name):
        raise RatingRefused(422, f"rater: expected at most {MAX_RATER_NAME} printable "
                                 "characters")
    return name


@lru_cache(maxsize=256)
def _shuffled(values: tuple, seed: str, key: str) -> tuple:
    order = list(values)
    random.Random(f"{seed}\0{key}").shuffle(order)
    return tuple(order)
