"""The FastAPI application: ``POST /v1/describe``, ``GET /health`` and the page at ``/``.

Every limit answers with a status and a JSON ``{"error": message}`` while the server keeps
serving: 401 (API key), 408 (the body was not sent in time), 413 (body or pixel count too
large), 415 (not an image upload), 422 (not a readable image), 503 (queue full or request
timed out; with ``Retry-After``), 500/507 (the batch failed / ran out of memory).
``?aligned=1`` says the upload is already an aligned face crop: no detection, one face.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from lavis_ext.serve.batching import BatchFailed, DynamicBatcher, QueueFull
from lavis_ext.serve.page import PAGE


@dataclass
class Limits:
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    request_timeout_s: float = 30.0


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise Refused(413, f"the body is {int(declared)} bytes, over the limit of {limit} "
                               "bytes (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked uploads carry no Content-Length
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over the limit of {limit} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, body: bytes) -> bytes:
    """The upload: multipart field ``image``, or the raw body (any image/* or no type)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
        except Exception as err:  # noqa: BLE001 - any parse failure is the client's input
            raise Refused(422, f"the multipart body could not be parsed: {err}") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise Refused(422, "the multipart body has no file field named 'image'")
        return await upload.read()
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise Refused(415, f"Content-Type {kind!r} is not an image; send multipart/form-data "
                           "with a file field 'image', or the image bytes with an image/* "
                           "type")
    return body


def _decode(data: bytes, max_pixels: int) -> Any:
    from PIL import Image

    from lavis_ext.describe.faces import TooManyPixels, open_image

    if not data:
        raise Refused(422, "the body is empty; send an image")
    try:
        return open_image(io.BytesIO(data), max_pixels=max_pixels)
    except TooManyPixels as err:
        raise Refused(413, f"{err} (--max-pixels)") from None
    except Image.DecompressionBombError as err:
        raise Refused(413, f"the image has too many pixels: {err}") from None
    except Image.UnidentifiedImageError:
        raise Refused(422, "the body is not an image in a format Pillow reads (JPEG, PNG, "
                           "WebP, BMP, TIFF, ...)") from None
    except Exception as err:  # noqa: BLE001 - undecodable bytes are the client's input
        raise Refused(422, f"the body is not a readable image ({type(err).__name__}: "
                           f"{err})") from None


TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def create_app(describe_batch: Callable[[list[Any]], Sequence[list[dict[str, Any]]]], *,
               model: str, detector: str, limits: Limits,
               api_key: str | None = None) -> FastAPI:
    """``describe_batch`` maps (PIL image, aligned) pairs to one list of face dicts each."""
    batcher: DynamicBatcher = DynamicBatcher(describe_batch, max_batch=limits.max_batch,
                                             max_wait_ms=limits.max_wait_ms,
                                             max_queue=limits.max_queue)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="Exp-BLIP describe", lifespan=lifespan, docs_url="/docs",
                  redoc_url=None)
    app.state.batcher = batcher

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        sent = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            sent = sent or bearer[7:].strip()
        return hmac.compare_digest(sent.encode(), api_key.encode())

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "ok" if batcher.alive else "error", "model": model,
                "detector": detector, "auth": api_key is not None,
                "queue": batcher.waiting, "batches": batcher.batches,
                "requests_done": batcher.items, "failed_batches": batcher.failed_batches,
                "mean_batch": round(batcher.items / batcher.batches, 2)
                if batcher.batches else None,
                "uptime_s": round(time.time() - started, 1), "limits": asdict(limits)}
        return JSONResponse(body, status_code=200 if batcher.alive else 503)

    @app.post("/v1/describe")
    async def describe(request: Request) -> JSONResponse:
        begin = time.perf_counter()
        deadline = begin + limits.request_timeout_s
        if not authorised(request):
            return _error(401, "missing or wrong API key (send X-API-Key or Authorization: "
                               "Bearer)", {"WWW-Authenticate": "Bearer"})
        flag = request.query_params.get("aligned", "").lower()
        if flag not in TRUE + FALSE:
            return _error(422, f"aligned={flag!r}: expected 1/true/yes or 0/false/no")
        aligned = flag in TRUE or detector == "none"
        try:
            with batcher.arriving():
                try:
                    body = await asyncio.wait_for(_read_body(request, limits.max_body_bytes),
                                                  limits.request_timeout_s)
                except asyncio.TimeoutError:
                    raise Refused(408, f"the body did not arrive within "
                                       f"{limits.request_timeout_s:g} s") from None
                data = await _image_bytes(request, body)
                image = await run_in_threadpool(_decode, data, limits.max_pixels)
            decoded = time.perf_counter()
            try:
                result = await batcher.submit((image, aligned),
                                              max(0.001, deadline - time.perf_counter()))
            except QueueFull as err:
                raise Refused(503, f"the server is busy: {err}; retry shortly",
                              {"Retry-After": "1"}) from None
            except asyncio.TimeoutError:
                raise Refused(503, f"the request timed out after "
                                   f"{limits.request_timeout_s:g} s (--request-timeout)",
                              {"Retry-After": "1"}) from None
            except BatchFailed as err:
                raise Refused(err.status, str(err)) from None
        except Refused as err:
            return _error(err.status, err.message, err.headers)
        done = time.perf_counter()
        return JSONResponse({
            "faces": result.value, "model": model,
            "detector": "none" if aligned else detector,
            "image": {"width": image.width, "height": image.height},
            "batch_size": result.batch_size,
            "timing_ms": {"decode": round((decoded - begin) * 1000, 1),
                          "queue": round(result.queue_ms, 1),
                          "model": round(result.run_ms, 1),
                          "total": round((done - begin) * 1000, 1)}})

    return app
