"""Start an ``expblip serve`` process and put concurrent load on it (benchmarks and tests).

Clients are threads with one keep-alive connection each (``http.client``, no extra
dependency), posting the same image as raw bytes, the way a program calling the API would.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Sequence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m lavis_ext COMMAND ARGS`` (``serve`` unless told) on a free local port,
    stopped on exit."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 log_path: str | None = None, command: str = "serve"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "lavis_ext", command, "--host", "127.0.0.1",
                   "--port", str(self.port), *args]
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    return json.load(reply)
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"the server at {self.url} was not ready in {timeout:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class LoadStats:
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]

    def line(self) -> str:
        mean_batch = statistics.mean(self.batch_sizes) if self.batch_sizes else float("nan")
        return (f"{self.clients:>3} clients: {self.rps:7.2f} req/s, p50 "
                f"{self.percentile(50):7.1f} ms, p95 {self.percentile(95):7.1f} ms, "
                f"mean batch {mean_batch:4.1f}, failures {len(self.failures)}")


def load(url: str, body: bytes, clients: int, per_client: int,
         content_type: str = "image/png", timeout: float = 60.0,
         path: str = "/v1/describe") -> LoadStats:
    """``clients`` threads each post ``body`` ``per_client`` times to ``url`` + ``path``."""
    host, port = url.split("//", 1)[1].split(":")
    stats = LoadStats(clients, clients * per_client, 0.0)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        start.wait()
        for _ in range(per_client):
            began = time.perf_counter()
            try:
                connection.request("POST", path, body,
                                   {"Content-Type": content_type})
                reply = connection.getresponse()
                data = reply.read()
                elapsed = (time.perf_counter() - began) * 1000.0
                if reply.status != 200:
                    raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
                answer = json.loads(data)
                with lock:
                    stats.latencies_ms.append(elapsed)
                    stats.batch_sizes.append(int(answer.get("batch_size", 0)))
            except Exception as err:  # noqa: BLE001 - counted, reported by the caller
                with lock:
                    stats.failures.append(f"{type(err).__name__}: {err}")
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    stats.seconds = time.perf_counter() - began
    return stats
