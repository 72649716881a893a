"""A local OpenAI-compatible server that writes captions from templates, for tests and demos.

It is a stand-in LLM, not a language model: it reads the AU list or the two captions out of
the request (the question formats of ``prompts/``) and composes an answer from the
vocabulary of :mod:`lavis_ext.facs`. Anything shown with its answers must say so.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (deterministic hashed
bag-of-words vectors), ``POST /v1/files``, ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/models``.

For tests it injects faults (429 with Retry-After, 500, slow answers that time out, empty or
malformed answers, answers that break the prompt's restrictions), adds a simulated latency,
and counts the requests it receives, so a test can assert that nothing was asked twice.

Run it by hand: ``python -m lavis_ext.captions.local_server --port 8000 --latency 0.2``.
"""
from __future__ import annotations

import argparse
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lavis_ext.facs import ACTION_UNITS, BASIC_EMOTIONS, join_words, third_person
from lavis_ext.metrics.recognition import parse_caption

FAULTS = ("ok", "429", "500", "timeout", "empty", "malformed", "no_choices", "restricted",
          "emotion")

# --- Composing answers ---------------------------------------------------------------------

_REGION_LEAD = {
    "brow": "around the eyebrows", "eye": "around the eyes", "cheek": "on the cheeks",
    "nose": "at the nose", "mouth": "around the mouth", "chin": "at the chin",
    "jaw": "at the jaw", "neck": "at the neck",
}
_REGION_ORDER = list(_REGION_LEAD)
_SUBJECTS = ["the person", "this person"]


def _action(number: int, third: bool = True) -> str:
    """Verb phrase with an article: "raises the inner eyebrow" (or "raise ..." for "they")."""
    verb = ACTION_UNITS[number].verb
    head, _, rest = (third_person(verb) if third else verb).partition(" ")
    return f"{head} the {rest}" if rest else head


def parse_aus(question: str) -> list[int]:
    """AUs asked about: "AU12" codes if present, else the noun forms of lavis_ext.facs."""
    numbers = {int(n) for n in re.findall(r"\bAU\s*(\d+)", question, re.IGNORECASE)}
    numbers &= set(ACTION_UNITS)
    if not numbers:
        lowered = question.lower()
        numbers = {n for n, au in ACTION_UNITS.items() if au.noun in lowered}
    return sorted(numbers)


def compose_au_answer(aus: list[int], variant: int = 0) -> str:
    """A fluent description of the actions, region by region; no codes, no emotion words."""
    if not aus:
        return ("The face is at rest: the eyes are open, the brows are in their usual place "
                "and the mouth is relaxed.")
    by_region: dict[str, list[int]] = {}
    for number in aus:
        by_region.setdefault(ACTION_UNITS[number].region, []).append(number)
    sentences = []
    subject = _SUBJECTS[variant % len(_SUBJECTS)]
    for i, region in enumerate(r for r in _REGION_ORDER if r in by_region):
        who = subject if i == 0 else "they"
        actions = join_words(_action(n, third=i == 0) for n in by_region[region])
        lead = _REGION_LEAD[region]
        text = f"{lead}, {who} {actions}."
        sentences.append(text[0].upper() + text[1:])
    return " ".join(sentences)


def compose_fusion_answer(au_caption: str, emotion_caption: str, variant: int = 0) -> str:
    """One description: the actions, the emotion, and which actions point to it."""
    actions = au_caption.strip().rstrip(".")
    actions = re.sub(r"^it is a people who\s+", "The person ", actions, flags=re.IGNORECASE)
    actions = actions[:1].upper() + actions[1:]
    emotions = [e for e in BASIC_EMOTIONS if e in parse_caption(emotion_caption).emotions]
    if emotions:
        feeling = join_words(BASIC_EMOTIONS[e].adjective for e in emotions)
    else:
        feeling = re.sub(r"^the face shows\s+", "", emotion_caption.strip().rstrip("."),
                         flags=re.IGNORECASE) or "calm"
    typical = sorted({n for e in emotions for n in BASIC_EMOTIONS[e].prototype_aus}
                     & parse_caption(au_caption).aus)
    if typical:
        nouns = join_words(f"the {ACTION_UNITS[n].noun}" for n in typical)
        reason = f"{nouns} {'is' if len(typical) == 1 else 'are'} typical of this state"
    else:
        reason = "the overall configuration of the face conveys it"
    endings = [f"Together, these movements show that the person looks {feeling}, since "
               f"{reason}.",
               f"These actions indicate that the person looks {feeling}: {reason}."]
    return f"{actions}. {endings[variant % len(endings)]}"


def compose_answer(messages: list[dict[str, Any]], variant: int = 0) -> str:
    """Answer a chat request built from the prompts of lavis_ext.captions."""
    question = next((str(m.get("content") or "") for m in reversed(messages)
                     if m.get("role") == "user"), "")
    au_line = re.search(r"^\s*Facial actions:\s*(.+)$", question, re.MULTILINE)
    emotion_line = re.search(r"^\s*Emotion:\s*(.+)$", question, re.MULTILINE)
    if au_line and emotion_line:
        return compose_fusion_answer(au_line.group(1), emotion_line.group(1), variant)
    return compose_au_answer(parse_aus(question), variant)


def embed_text(text: str, dimensions: int = 64) -> list[float]:
    """Deterministic unit vector: hashed bag of words, so similar texts get similar vectors."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z]+", text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        vector[digest[0] % dimensions] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def request_key(body: dict[str, Any]) -> str:
    """Identity of a chat request: everything but transport options."""
    core = {k: v for k, v in body.items() if k not in ("stream", "user")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


# --- Server --------------------------------------------------------------------------------

class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections at concurrency 32

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client hanging up is normal


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


class LocalLLMServer:
    """Start with ``with LocalLLMServer(latency=0.2) as server:``; ``server.base_url`` is the
    ``/v1`` URL for the openai client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0,
                 faults: FaultPlan | None = None, api_key: str | None = None,
                 batch_delay: float = 0.1):
        self.latency = latency
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.batch_delay = batch_delay
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._sequence = list(self.faults.sequence)
        self.requests_total = 0
        self.chat_counts: Counter[str] = Counter()  # request_key -> times received
        self.fault_counts: Counter[str] = Counter()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = 0
        self._httpd = _QuietServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "LocalLLMServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "LocalLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # counters for tests
    @property
    def chat_requests(self) -> int:
        return sum(self.chat_counts.values())

    def repeated_requests(self) -> dict[str, int]:
        """Chat requests received more than once (key -> count)."""
        return {k: n for k, n in self.chat_counts.items() if n > 1}

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids:06d}"

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

    def completion(self, body: dict[str, Any], fault: str = "ok") -> dict[str, Any]:
        """The chat-completion object for a request (used online and in batches)."""
        messages = body.get("messages") or []
        variant = int(hashlib.md5(json.dumps(body, sort_keys=True).encode()).hexdigest(), 16)
        if fault == "empty":
            text = ""
        elif fault == "restricted":
            text = "The person shows AU 12 and looks happy."
        elif fault == "emotion":
            text = "The person raises the cheeks and looks delighted and joyful."
        else:
            text = compose_answer(messages, variant)
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in messages)
        return {
            "id": self._next_id("chatcmpl"), "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "local-template"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4,
                      "total_tokens": prompt_tokens + len(text) // 4},
        }

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
                errors.append(json.dumps({"id": self._next_id("batch_req"),
                                          "custom_id": custom_id, "response": None,
                                          "error": {"code": "invalid_request",
                                                    "message": f"line {number}: {err}"}}))
                continue
            with self._lock:
                self.chat_counts[request_key(body)] += 1
            out.append(json.dumps({"id": self._next_id("batch_req"),
                                   "custom_id": item.get("custom_id"), "error": None,
                                   "response": {"status_code": 200,
                                                "body": self.completion(body)}}))
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = self._next_id("file")
                self.files[file_id] = ("\n".join(rows) + "\n").encode()
                batch[name] = file_id
        batch.update(status="completed", completed_at=int(time.time()),
                     request_counts={"total": len(out) + len(errors), "completed": len(out),
                                     "failed": len(errors)})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every answer

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                      raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to answer

            def _error(self, status: int, message: str, headers: dict[str, str] | None = None):
                self._send(status, {"error": {"message": message, "type": "server_error",
                                              "code": str(status)}}, headers)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorised(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._error(401, "invalid API key")
                return False

            def do_GET(self) -> None:
                with server._lock:
                    server.requests_total += 1
                if not self._authorised():
                    return
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": "local-template", "object": "model", "owned_by": "lavis_ext"}]})
                elif m := re.fullmatch(r"/v1/files/([\w-]+)/content", path):
                    if m.group(1) not in server.files:
                        return self._error(404, f"no file {m.group(1)}")
                    self._send(200, None, raw=server.files[m.group(1)])
                elif m := re.fullmatch(r"/v1/batches/([\w-]+)", path):
                    if m.group(1) not in server.batches:
                        return self._error(404, f"no batch {m.group(1)}")
                    self._send(200, server.batches[m.group(1)])
                else:
                    self._error(404, f"no route GET {path}")

            def do_POST(self) -> None:
                with server._lock:
                    server.requests_total += 1
                raw = self._body()
                if not self._authorised():
                    return
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/files":
                    return self._upload(raw)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._error(400, "request body is not JSON")
                if path == "/v1/chat/completions":
                    self._chat(body)
                elif path == "/v1/embeddings":
                    self._embeddings(body)
                elif path == "/v1/batches":
                    self._create_batch(body)
                else:
                    self._error(404, f"no route POST {path}")

            def _chat(self, body: dict[str, Any]) -> None:
                with server._lock:
                    server.chat_counts[request_key(body)] += 1
                if not isinstance(body.get("messages"), list):
                    return self._error(400, "'messages' must be a list")
                fault = server._pick_fault()
                if server.latency:
                    time.sleep(server.latency)
                plan = server.faults
                if fault == "429":
                    seconds = plan.retry_after
                    return self._error(429, "rate limited (injected)", {
                        "Retry-After": str(max(0, math.ceil(seconds))),
                        "retry-after-ms": str(int(seconds * 1000))})
                if fault == "500":
                    return self._error(500, "internal error (injected)")
                if fault == "timeout":
                    time.sleep(plan.slow_seconds)
                if fault == "malformed":
                    return self._send(200, None, raw=b'{"id": "chatcmpl-broken", "choices": [')
                if fault == "no_choices":
                    return self._send(200, {"id": "chatcmpl-empty", "object": "chat.completion",
                                            "created": 0, "model": body.get("model")})
                self._send(200, server.completion(body, fault))

            def _embeddings(self, body: dict[str, Any]) -> None:
                inputs = body.get("input")
                inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
                dims = int(body.get("dimensions") or 64)
                data = [{"object": "embedding", "index": i, "embedding": embed_text(t, dims)}
                        for i, t in enumerate(map(str, inputs))]
                used = sum(_tokens(str(t)) for t in inputs)
                self._send(200, {"object": "list", "data": data,
                                 "model": body.get("model", "local-hash"),
                                 "usage": {"prompt_tokens": used, "total_tokens": used}})

            def _upload(self, raw: bytes) -> None:
                head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
                message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                    head + raw)
                fields: dict[str, tuple[str | None, bytes]] = {}
                if message.is_multipart():
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True))
                if "file" not in fields:
                    return self._error(400, "multipart field 'file' is missing")
                filename, data = fields["file"]
                file_id = server._next_id("file")
                server.files[file_id] = data
                purpose = fields.get("purpose", (None, b"batch"))[1].decode()
                self._send(200, {"id": file_id, "object": "file", "bytes": len(data),
                                 "created_at": int(time.time()), "filename": filename or "upload",
                                 "purpose": purpose, "status": "processed"})

            def _create_batch(self, body: dict[str, Any]) -> None:
                if body.get("input_file_id") not in server.files:
                    return self._error(400, f"no file {body.get('input_file_id')}")
                batch_id = server._next_id("batch")
                server.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                    "input_file_id": body["input_file_id"],
                    "completion_window": body.get("completion_window", "24h"),
                    "status": "validating", "created_at": int(time.time()),
                    "output_file_id": None, "error_file_id": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0}}
                threading.Thread(target=server._run_batch, args=(batch_id,), daemon=True).start()
                self._send(200, server.batches[batch_id])

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible template server "
                                     "(a stand-in LLM for tests and demos, not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    args = parser.parse_args(argv)
    server = LocalLLMServer(args.host, args.port, latency=args.latency).start()
    print(f"serving {server.base_url} (template answers, not an LLM); Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
