"""Synthesis throughput (captions/s) at several concurrencies against the local server.

The server runs in its own process with a simulated latency (default 200 ms per request), so
the ideal throughput is concurrency / latency; the target is at least 0.8 of that. Every
caption is a real call (fresh cache, distinct AU sets), validated and cached as in a real run.

    .venv/bin/python run_scripts/bench_synthesis.py [--latency 0.2] [--concurrency 1 8 32]
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from lavis_ext.captions.client import ClientConfig  # noqa: E402
from lavis_ext.captions.engine import synthesize_records  # noqa: E402
from lavis_ext.data.records import new_record  # noqa: E402
from lavis_ext.facs import AU_NUMBERS  # noqa: E402


def distinct_records(n: int, offset: int) -> list[dict]:
    """Records whose AU sets all differ, so that no answer comes from the cache."""
    combos = itertools.islice(itertools.combinations(AU_NUMBERS, 3), offset, offset + n)
    return [new_record(f"{i}.jpg", str(i), "bench", "train",
                       aus={str(a): int(a in combo) for a in AU_NUMBERS})
            for i, combo in enumerate(combos)]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "lavis_ext.captions.local_server",
                             "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"local server did not start: {line!r}")
    return proc, line.split()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="ideal duration of each run (sets the number of captions)")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-local")
    server, url = start_server(args.latency)
    print(f"local template server at {url}, simulated latency {args.latency * 1000:.0f} ms")
    print(f"{'concurrency':>11} {'captions':>8} {'seconds':>8} {'captions/s':>10} "
          f"{'target':>8} {'ideal':>8}  result")
    failures = 0
    offset = 0
    try:
        for concurrency in args.concurrency:
            n = max(10, int(args.seconds * concurrency / args.latency))
            records = distinct_records(n, offset)
            offset += n
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                summary = synthesize_records(
                    records, "au-llm", client_config=ClientConfig(model="local-template",
                                                                  base_url=url),
                    cache_path=Path(tmp) / "cache.sqlite", concurrency=concurrency,
                    progress=False)
                elapsed = time.perf_counter() - start
            made = summary.stats.calls
            if summary.added != n or made != n:
                raise RuntimeError(f"expected {n} fresh captions, got {summary.added} "
                                   f"({made} calls):\n{summary.format()}")
            rate = made / elapsed
            ideal = concurrency / args.latency
            ok = rate >= 0.8 * ideal
            failures += not ok
            print(f"{concurrency:>11} {made:>8} {elapsed:>8.2f} {rate:>10.1f} "
                  f"{0.8 * ideal:>8.1f} {ideal:>8.1f}  {'ok' if ok else 'BELOW TARGET'}",
                  flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
