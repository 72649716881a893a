"""The FastAPI application of ``expblip rate``: the page, the JSON API and the item images.

``GET /api/next?rater=NAME``, ``POST /api/ratings``, ``GET /api/images/{item}``, ``GET
/health``; refusals answer ``{"error": message, "status": code}``: 400 (the body is not a JSON
object), 404 (no such image), 422 (a field is missing or wrong; the message names it).
SQLite calls block, so they run in the thread pool (plain ``def`` routes, or
``run_in_threadpool`` where the body is read asynchronously).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from lavis_ext.rate.page import PAGE
from lavis_ext.rate.store import RatingRefused, RatingStore

FIELDS = ("rater", "item", "caption", "correctness", "complete")
PICKS = ("most", "least", None)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def parse_rating(body: bytes) -> dict[str, Any]:
    """The five fields of a rating, checked; ``RatingRefused`` says which one is wrong."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RatingRefused(400, f"the body is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise RatingRefused(400, "the body must be a JSON object with the fields "
                                 + ", ".join(FIELDS))
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise RatingRefused(422, f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise RatingRefused(422, f"unknown field(s): {', '.join(extra)}; expected "
                                 + ", ".join(FIELDS))
    for name in ("item", "caption"):
        if not isinstance(data[name], str) or not data[name]:
            raise RatingRefused(422, f"{name}: expected the id string /api/next gave, got "
                                     f"{data[name]!r:.60}")
    score = data["correctness"]
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 10:
        raise RatingRefused(422, f"correctness: expected a whole number from 1 to 10, got "
                                 f"{score!r:.60}")
    if data["complete"] not in PICKS:
        raise RatingRefused(422, f"complete: expected \"most\", \"least\" or null (is this "
                                 f"the item's most or least complete caption?), got "
                                 f"{data['complete']!r:.60}")
    return data


def create_app(store: RatingStore) -> FastAPI:
    app = FastAPI(title="Exp-BLIP human rating", docs_url="/docs", redoc_url=None)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", **store.counts()})

    @app.get("/api/next")
    def next_item(rater: str = "") -> JSONResponse:
        try:
            return JSONResponse(store.next_item(rater))
        except RatingRefused as err:
            return _error(err.status, str(err))

    @app.post("/api/ratings")
    async def rate(request: Request) -> JSONResponse:
        try:
            data = parse_rating(await request.body())
            saved = await run_in_threadpool(store.rate, data["rater"], data["item"],
                                            data["caption"], data["correctness"],
                                            data["complete"])
        except RatingRefused as err:
            return _error(err.status, str(err))
        return JSONResponse(saved)

    @app.get("/api/images/{item}", response_model=None)
    def image(item: str) -> FileResponse | JSONResponse:
        path = store.image_path(item)
        if path is None or not Path(path).is_file():
            return _error(404, f"item {item!r}: no image" if path is None
                          else f"item {item!r}: the image file is gone")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    return app
