"""A fault-injecting, request-counting OpenAI-compatible server for the caption tests.

It extends the package's template stand-in (:class:`lavis_ext.captions.local_server.LocalLLMServer`)
with what only tests need:

* faults (:class:`FaultPlan`): 429 with Retry-After, 500, slow answers that time out, empty or
  malformed answers, answers that break the prompt's restrictions;
* counters: every request, every chat request by its content (so a test can assert that nothing
  was asked twice) and every fault injected;
* an API key check, ``/v1/embeddings`` (deterministic hashed bag-of-words vectors) and the
  Batch API (``/v1/files``, ``/v1/files/{id}/content``, ``/v1/batches``, ``/v1/batches/{id}``).
"""
from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lavis_ext.captions.local_server import LocalLLMServer, Reply, count_tokens, error_reply

FAULTS = ("ok", "429", "500", "timeout", "empty", "malformed", "no_choices", "restricted",
          "emotion")

# Answers for the faults that return a completion with the wrong text.
_FAULT_TEXT = {
    "empty": "",
    "restricted": "The person shows AU 12 and looks happy.",
    "emotion": "The person raises the cheeks and looks delighted and joyful.",
}


@dataclass
class FaultPlan:
    """Which faults to inject. ``sequence`` is consumed one entry per chat request, then
    ``rates`` (fault -> probability, seeded) apply; "ok" means no fault."""

    sequence: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: float = 0.05  # seconds, sent as Retry-After (rounded up) and retry-after-ms
    slow_seconds: float = 2.0  # how long a "timeout" fault stalls before answering

    def __post_init__(self) -> None:
        unknown = [f for f in [*self.sequence, *self.rates] if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {FAULTS}")


def request_key(body: dict[str, Any]) -> str:
    """Identity of a chat request: everything but transport options."""
    core = {k: v for k, v in body.items() if k not in ("stream", "user")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def embed_text(text: str, dimensions: int = 64) -> list[float]:
    """Deterministic unit vector: hashed bag of words, so similar texts get similar vectors."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z]+", text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        vector[digest[0] % dimensions] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class FaultyLLMServer(LocalLLMServer):
    """``with FaultyLLMServer(faults=FaultPlan(sequence=["429"]), api_key="k") as server:``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0,
                 faults: FaultPlan | None = None, api_key: str | None = None,
                 batch_delay: float = 0.1):
        super().__init__(host, port, latency=latency)
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.batch_delay = batch_delay
        self._rng = random.Random(self.faults.seed)
        self._sequence = list(self.faults.sequence)
        self.requests_total = 0
        self.chat_counts: Counter[str] = Counter()  # request_key -> times received
        self.fault_counts: Counter[str] = Counter()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    @property
    def chat_requests(self) -> int:
        return sum(self.chat_counts.values())

    def repeated_requests(self) -> dict[str, int]:
        """Chat requests received more than once (key -> count)."""
        return {k: n for k, n in self.chat_counts.items() if n > 1}

    def _pick_fault(self) -> str:
        with self._lock:
            if self._sequence:
                fault = self._sequence.pop(0)
            else:
                fault = "ok"
                draw = self._rng.random()
                for name, rate in self.faults.rates.items():
                    if draw < rate:
                        fault = name
                        break
                    draw -= rate
            self.fault_counts[fault] += 1
            return fault

    # routes
    def route(self, method: str, path: str, headers: Any, raw: bytes) -> Reply:
        with self._lock:
            self.requests_total += 1
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_reply(401, "invalid API key")
        if method == "POST" and path == "/v1/files":
            return self._upload(headers, raw)
        if method == "GET":
            if m := re.fullmatch(r"/v1/files/([\w-]+)/content", path):
                if m.group(1) not in self.files:
                    return error_reply(404, f"no file {m.group(1)}")
                return Reply(200, raw=self.files[m.group(1)])
            if m := re.fullmatch(r"/v1/batches/([\w-]+)", path):
                if m.group(1) not in self.batches:
                    return error_reply(404, f"no batch {m.group(1)}")
                return Reply(200, self.batches[m.group(1)])
        if method == "POST" and path in ("/v1/embeddings", "/v1/batches"):
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return error_reply(400, "request body is not JSON")
            return self._embeddings(body) if path == "/v1/embeddings" else self._create_batch(body)
        return super().route(method, path, headers, raw)

    def chat(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.chat_counts[request_key(body)] += 1
        if not isinstance(body.get("messages"), list):
            return error_reply(400, "'messages' must be a list")
        fault = self._pick_fault()
        if fault == "timeout":
            time.sleep(self.faults.slow_seconds)
        if fault in ("ok", "timeout"):
            return super().chat(body)
        if self.latency:
            time.sleep(self.latency)
        if fault == "429":
            seconds = self.faults.retry_after
            return error_reply(429, "rate limited (injected)", {
                "Retry-After": str(max(0, math.ceil(seconds))),
                "retry-after-ms": str(int(seconds * 1000))})
        if fault == "500":
            return error_reply(500, "internal error (injected)")
        if fault == "malformed":
            return Reply(200, raw=b'{"id": "chatcmpl-broken", "choices": [')
        if fault == "no_choices":
            return Reply(200, {"id": "chatcmpl-empty", "object": "chat.completion",
                               "created": 0, "model": body.get("model")})
        return Reply(200, self.completion(body, _FAULT_TEXT[fault]))

    def _embeddings(self, body: dict[str, Any]) -> Reply:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = int(body.get("dimensions") or 64)
        data = [{"object": "embedding", "index": i, "embedding": embed_text(t, dims)}
                for i, t in enumerate(map(str, inputs))]
        used = sum(count_tokens(str(t)) for t in inputs)
        return Reply(200, {"object": "list", "data": data, "model": body.get("model", "local-hash"),
                           "usage": {"prompt_tokens": used, "total_tokens": used}})

    def _upload(self, headers: Any, raw: bytes) -> Reply:
        head = f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[str(name)] = (part.get_filename(), part.get_payload(decode=True))
        if "file" not in fields:
            return error_reply(400, "multipart field 'file' is missing")
        filename, data = fields["file"]
        file_id = self.next_id("file")
        self.files[file_id] = data
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        return Reply(200, {"id": file_id, "object": "file", "bytes": len(data),
                           "created_at": int(time.time()), "filename": filename or "upload",
                           "purpose": purpose, "status": "processed"})

    def _create_batch(self, body: dict[str, Any]) -> Reply:
        if body.get("input_file_id") not in self.files:
            return error_reply(400, f"no file {body.get('input_file_id')}")
        batch_id = self.next_id("batch")
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "created_at": int(time.time()),
            "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        threading.Thread(target=self._run_batch, args=(batch_id,), daemon=True).start()
        return Reply(200, self.batches[batch_id])

    def _run_batch(self, batch_id: str) -> None:
        """Answer a batch's input file line by line, like the Batch API (fault-free)."""
        time.sleep(self.batch_delay)
        batch = self.batches[batch_id]
        batch["status"] = "in_progress"
        lines = self.files[batch["input_file_id"]].decode("utf-8", "replace").splitlines()
        out, errors = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            item: Any = None
            try:
                item = json.loads(line)
                body = item["body"]
                if not isinstance(body.get("messages"), list):
                    raise ValueError("'messages' must be a list")
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                custom_id = item.get("custom_id") if isinstance(item, dict) else None
                errors.append(json.dumps({"id": self.next_id("batch_req"),
                                          "custom_id": custom_id, "response": None,
                                          "error": {"code": "invalid_request",
                                                    "message": f"line {number}: {err}"}}))
                continue
            with self._lock:
                self.chat_counts[request_key(body)] += 1
            out.append(json.dumps({"id": self.next_id("batch_req"),
                                   "custom_id": item.get("custom_id"), "error": None,
                                   "response": {"status_code": 200,
                                                "body": self.completion(body)}}))
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = self.next_id("file")
                self.files[file_id] = ("\n".join(rows) + "\n").encode()
                batch[name] = file_id
        batch.update(status="completed", completed_at=int(time.time()),
                     request_counts={"total": len(out) + len(errors), "completed": len(out),
                                     "failed": len(errors)})
