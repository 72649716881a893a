"""A local OpenAI-compatible server that writes captions from templates: the demo's stand-in.

It is a stand-in LLM, not a language model: it reads the AU list or the two captions out of
the request (the question formats of ``prompts/``) and composes an answer from the
vocabulary of :mod:`lavis_ext.facs`. Anything shown with its answers must say so.

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``. Subclasses add routes by
overriding :meth:`LocalLLMServer.route` (the tests' fault-injecting double does).

Run it by hand: ``python -m lavis_ext.captions.local_server --port 8000 --latency 0.2``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lavis_ext.facs import (ACTION_UNITS, BASIC_EMOTIONS, intensity_from_word, join_words,
                            third_person)
from lavis_ext.metrics.recognition import parse_caption

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


def compose_cot_answer(au_line: str, emotion_line: str) -> str:
    """The cot-rule text for the AUs (and degree words) and the emotion a CoT question
    names; an emotion line naming no basic emotion leaves the conclusion to the rule."""
    from lavis_ext.captions.cot import cot_caption

    levels: dict[int, int] = {}
    for number, inside in re.findall(r"\bAU(\d+)\s*\(([^)]*)\)", au_line):
        for word in inside.replace(",", " ").split():
            level = intensity_from_word(word)
            if level:
                levels[int(number)] = level
    aus = parse_aus(au_line) if au_line.strip().lower() != "none" else []
    emotions = [e for e in BASIC_EMOTIONS if e in parse_caption(emotion_line).emotions]
    return cot_caption(aus, emotions, intensities=levels)


def compose_answer(messages: list[dict[str, Any]], variant: int = 0) -> str:
    """Answer a chat request built from the prompts of lavis_ext.captions."""
    question = next((str(m.get("content") or "") for m in reversed(messages)
                     if m.get("role") == "user"), "")
    cot_aus = re.search(r"^\s*Active action units:\s*(.+)$", question, re.MULTILINE)
    cot_emotion = re.search(r"^\s*Emotion label:\s*(.+)$", question, re.MULTILINE)
    if cot_aus and cot_emotion:
        return compose_cot_answer(cot_aus.group(1), cot_emotion.group(1))
    au_line = re.search(r"^\s*Facial actions:\s*(.+)$", question, re.MULTILINE)
    emotion_line = re.search(r"^\s*Emotion:\s*(.+)$", question, re.MULTILINE)
    if au_line and emotion_line:
        return compose_fusion_answer(au_line.group(1), emotion_line.group(1), variant)
    return compose_au_answer(parse_aus(question), variant)


def count_tokens(text: str) -> int:
    """A rough token count for the ``usage`` fields (4 characters a token)."""
    return max(1, len(text) // 4)


# --- Server --------------------------------------------------------------------------------

@dataclass
class Reply:
    """An HTTP answer: a JSON payload, or raw bytes when ``raw`` is set."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An error in the OpenAI API's shape."""
    return Reply(status, {"error": {"message": message, "type": "server_error",
                                    "code": str(status)}}, headers or {})


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections at concurrency 32

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client hanging up is normal


class LocalLLMServer:
    """Start with ``with LocalLLMServer(latency=0.2) as server:``; ``server.base_url`` is the
    ``/v1`` URL for the openai client. ``latency`` (seconds) is added to every chat answer."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency: float = 0.0):
        self.latency = latency
        self._lock = threading.Lock()
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

    # answers
    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids:06d}"

    def completion(self, body: dict[str, Any], text: str | None = None) -> dict[str, Any]:
        """The chat-completion object for a request; ``text`` replaces the composed answer."""
        messages = body.get("messages") or []
        if text is None:
            variant = int(hashlib.md5(json.dumps(body, sort_keys=True).encode()).hexdigest(), 16)
            text = compose_answer(messages, variant)
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) for m in messages)
        return {
            "id": self.next_id("chatcmpl"), "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "local-template"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4,
                      "total_tokens": prompt_tokens + len(text) // 4},
        }

    def chat(self, body: dict[str, Any]) -> Reply:
        """``POST /v1/chat/completions``."""
        if not isinstance(body.get("messages"), list):
            return error_reply(400, "'messages' must be a list")
        if self.latency:
            time.sleep(self.latency)
        return Reply(200, self.completion(body))

    def route(self, method: str, path: str, headers: Any, raw: bytes) -> Reply:
        """Answer one request (``path`` without the query string or a trailing slash)."""
        if method == "GET" and path == "/v1/models":
            return Reply(200, {"object": "list", "data": [
                {"id": "local-template", "object": "model", "owned_by": "lavis_ext"}]})
        if method == "POST" and path == "/v1/chat/completions":
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return error_reply(400, "request body is not JSON")
            return self.chat(body)
        return error_reply(404, f"no route {method} {path}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms to every answer

            def log_message(self, *args: Any) -> None:  # keep the console clean
                pass

            def _answer(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0].rstrip("/")
                reply = server.route(method, path, self.headers, raw)
                data = reply.raw if reply.raw is not None else json.dumps(reply.payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting; nothing to answer

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible template server "
                                     "(a stand-in LLM for demos, not a model).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
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
