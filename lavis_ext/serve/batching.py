"""Dynamic batching: concurrent requests share one model call.

Each request puts its item and a future on a bounded queue and awaits the future. One
background task takes the first waiting item, gathers more until the batch holds
``max_batch`` items or ``max_wait_ms`` has passed, drops items whose callers have gone (timed
out or disconnected), and runs the batch function in the single model thread, off the event
loop. The wait ends early once the batch is as large as the previous one (the clients it
answered are the ones coming back) and no request is still being read: a lone client does
not pay the wait (TorchServe's pitfall #1301), and stragglers of one batch join the next. The
function maps a list to a list of the same length; a mismatch or an exception fails
that batch only. The loop itself catches everything else, so it never dies while the server
looks healthy (the failure mode of Ray Serve #66140). A full queue is refused at once (the
caller answers 503), as Triton's ``max_queue_size`` does.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than ``max_queue`` allows."""


class BatchFailed(Exception):
    """The batch this request was in failed; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


@dataclass
class Result(Generic[R]):
    value: R
    batch_size: int
    queue_ms: float
    run_ms: float


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    enqueued: float


class DynamicBatcher(Generic[T, R]):
    """``await submit(item, timeout)`` returns a ``Result``; ``fn`` runs on whole batches."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 16,
                 max_wait_ms: float = 10.0, max_queue: int = 64):
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue)):
            if value < 1:
                raise ValueError(f"{name} {value}: expected at least 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms {max_wait_ms}: expected 0 or more")
        self.fn, self.max_batch, self.max_queue = fn, max_batch, max_queue
        self.max_wait = max_wait_ms / 1000.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="expblip-model")
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task | None = None
        self.batches = self.items = self.failed_batches = self.dropped = 0
        self.last_size = 1
        self.incoming = 0  # requests being read or decoded: about to be submitted

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop on the running event loop (call from the app's startup)."""
        self.queue = asyncio.Queue(self.max_queue)
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def waiting(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    # -- requests -----------------------------------------------------------------------------
    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (body being read), so a forming batch waits for it."""
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    async def submit(self, item: T, timeout: float | None = None) -> Result[R]:
        """Queue ``item``; raises ``QueueFull``, ``asyncio.TimeoutError`` or ``BatchFailed``."""
        if not self.alive or self.queue is None:
            raise BatchFailed("the batch worker is not running", 503)
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(item, future, time.perf_counter()))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are already waiting") from None
        # On timeout wait_for cancels the future; the loop then skips this item.
        return await asyncio.wait_for(future, timeout)

    # -- the loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self._one_batch()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive any one batch
                self.failed_batches += 1
                log.exception("batch loop error (the loop goes on)")

    async def _gather(self) -> list[_Job]:
        assert self.queue is not None
        batch = [await self.queue.get()]
        expected = self.last_size
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if len(batch) >= expected and not self.incoming:
                break  # as many as last time, and nobody else is on the way
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            # Polling, not wait_for(queue.get()): a timed-out get can lose an item on 3.11.
            await asyncio.sleep(min(remaining, 0.002))
        return batch

    async def _one_batch(self) -> None:
        batch = await self._gather()
        self.last_size = len(batch)
        live = [job for job in batch if not job.future.done()]
        self.dropped += len(batch) - len(live)
        if not live:
            return
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.fn, [job.item for job in live])
            if len(outputs) != len(live):
                raise BatchFailed(f"the model returned {len(outputs)} results for a batch of "
                                  f"{len(live)} requests")
        except Exception as err:  # noqa: BLE001 - fail this batch's requests, not the loop
            self.failed_batches += 1
            if isinstance(err, BatchFailed):
                failure = err
            elif isinstance(err, MemoryError) or "out of memory" in str(err).lower():
                failure = BatchFailed(f"out of memory in a batch of {len(live)}: {err}", 507)
            else:
                failure = BatchFailed(f"the model failed on this batch: "
                                      f"{type(err).__name__}: {err}")
            log.warning("batch of %d failed: %s", len(live), failure)
            for job in live:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        run_ms = (time.perf_counter() - started) * 1000.0
        self.batches += 1
        self.items += len(live)
        for job, output in zip(live, outputs):
            if not job.future.done():
                job.future.set_result(Result(output, len(live),
                                             (started - job.enqueued) * 1000.0, run_ms))
