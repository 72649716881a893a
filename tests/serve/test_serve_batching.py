"""The dynamic batcher alone (no model, no HTTP): batches form, failures stay in one batch."""
import asyncio
import threading
import time

import pytest

from lavis_ext.serve.batching import BatchFailed, DynamicBatcher, QueueFull


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_batches_bounded_by_max_batch():
    seen = []

    def double(items):
        seen.append(len(items))
        time.sleep(0.02)
        return [2 * x for x in items]

    async def main():
        batcher = DynamicBatcher(double, max_batch=4, max_wait_ms=50, max_queue=32)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, 5) for i in range(10)))
        await batcher.stop()
        return results

    results = run(main())
    assert [r.value for r in results] == [2 * i for i in range(10)]
    assert max(seen) == 4 and sum(seen) == 10 and len(seen) == 3
    assert results[0].batch_size == 4 and results[0].run_ms > 0


def test_a_failing_batch_fails_only_its_requests_and_the_loop_goes_on():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("exploded")
        if "short" in items:
            return []  # the wrong number of outputs
        if "oom" in items:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return [x.upper() for x in items]

    async def main():
        batcher = DynamicBatcher(flaky, max_batch=1, max_wait_ms=0)
        batcher.start()
        outcomes = []
        for item in ("a", "boom", "short", "oom", "b"):
            try:
                outcomes.append((await batcher.submit(item, 5)).value)
            except BatchFailed as err:
                outcomes.append((err.status, str(err)))
        alive = batcher.alive
        failed = batcher.failed_batches
        await batcher.stop()
        return outcomes, alive, failed

    outcomes, alive, failed = run(main())
    assert outcomes[0] == "A" and outcomes[4] == "B"
    assert outcomes[1][0] == 500 and "RuntimeError: exploded" in outcomes[1][1]
    assert outcomes[2][0] == 500 and "0 results for a batch of 1" in outcomes[2][1]
    assert outcomes[3][0] == 507 and "out of memory" in outcomes[3][1]
    assert alive and failed == 3


def test_full_queue_is_refused_at_once_and_timed_out_requests_are_dropped():
    release = threading.Event()
    ran = []

    def slow(items):
        ran.extend(items)
        release.wait(5)
        return items

    async def main():
        batcher = DynamicBatcher(slow, max_batch=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("first", 5))
        await asyncio.sleep(0.05)  # "first" is running and holds the model thread
        waiting = [asyncio.ensure_future(batcher.submit(x, 0.1)) for x in ("t1", "t2")]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit("one too many", 5)
        for task in waiting:
            with pytest.raises(asyncio.TimeoutError):
                await task
        release.set()
        assert (await first).value == "first"
        assert (await batcher.submit("after", 5)).value == "after"
        dropped = batcher.dropped
        await batcher.stop()
        return dropped

    dropped = run(main())
    assert ran == ["first", "after"] and dropped == 2  # the timed-out ones never ran


def test_bad_settings():
    with pytest.raises(ValueError):
        DynamicBatcher(list, max_batch=0)
    with pytest.raises(ValueError):
        DynamicBatcher(list, max_queue=0)
    with pytest.raises(ValueError):
        DynamicBatcher(list, max_wait_ms=-1)


def test_a_lone_request_does_not_wait_but_concurrent_ones_do():
    sizes = []

    def echo(items):
        sizes.append(len(items))
        return items

    async def main():
        batcher = DynamicBatcher(echo, max_batch=8, max_wait_ms=400)
        batcher.start()
        began = time.perf_counter()
        await batcher.submit("alone", 5)
        lone = time.perf_counter() - began
        await asyncio.gather(*(batcher.submit(i, 5) for i in range(3)))  # a batch of 3
        # After a batch of several, the first arrival waits for company.
        late = asyncio.ensure_future(batcher.submit("first", 5))
        await asyncio.sleep(0.1)
        other = await batcher.submit("second", 5)
        await late
        await batcher.stop()
        return lone, other.batch_size

    lone, together = run(main())
    assert lone < 0.3 and together == 2 and sizes[:2] == [1, 3]
