"""``expblip serve``: load the captioner and the face detector once, then answer HTTP.

The API key, when ``--api-key`` asks for one, is read from ``$EXPBLIP_API_KEY`` so that it
never appears on a command line, in a log or in a file.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from typing import Any

from lavis_ext.errors import UsageError
from lavis_ext.flags import positive_int
from lavis_ext.describe.cli import add_face_arguments

API_KEY_ENV = "EXPBLIP_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="exp_blip",
                        help="training checkpoint (.pth) or ARCH[:MODEL_TYPE]")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--max-batch", type=positive_int, default=16,
                        help="most requests (and faces) in one model call")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long the first request of a batch waits for others")
    parser.add_argument("--max-queue", type=positive_int, default=64,
                        help="requests allowed to wait; more get 503 at once")
    parser.add_argument("--max-body-mb", type=float, default=10.0,
                        help="largest accepted upload, in MiB (413 above)")
    parser.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                        help="largest accepted image, width x height (413 above)")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="seconds a request may take in all (503 after)")
    parser.add_argument("--api-key", action="store_true",
                        help=f"require clients to send the key held in ${API_KEY_ENV} "
                             "(X-API-Key or Authorization: Bearer)")
    add_face_arguments(parser, "treat every upload as one aligned face crop (as ?aligned=1 "
                               "does per request)")
    parser.add_argument("--log-level", default="warning", help="server log level",
                        choices=("critical", "error", "warning", "info", "debug"))


def check(args: argparse.Namespace) -> str | None:
    """Flag checks before anything loads; returns the API key (or None)."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0-65535")
    for flag in ("max_body_mb", "request_timeout"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a "
                             "positive number")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms {args.max_wait_ms}: expected 0 or more")
    key = None
    if args.api_key:
        key = os.environ.get(API_KEY_ENV, "")
        if not key:
            raise UsageError(f"--api-key: set the key in the environment variable "
                             f"{API_KEY_ENV} first")
    return key


def _loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def build_batch_fn(describer: Any):
    """(image, aligned) pairs -> one list of JSON-ready face dicts per image (model thread)."""
    def describe_batch(items: list[tuple[Any, bool]]) -> list[list[dict[str, Any]]]:
        described = describer.describe([image for image, _ in items],
                                       [aligned for _, aligned in items])
        return [[face.to_json() for face in faces] for faces in described]

    return describe_batch


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from lavis_ext.describe.cli import build_describer, map_heap_for_model
    from lavis_ext.serve.app import Limits, create_app

    key = check(args)
    if key is None and not _loopback(args.host):
        print(f"expblip serve: warning: binding {args.host} without --api-key lets anyone "
              "who can reach it use the model", file=sys.stderr)
    describer = build_describer(args, args.max_batch)
    map_heap_for_model(describer, args.device)
    limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                    max_queue=args.max_queue,
                    max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                    max_pixels=args.max_pixels, request_timeout_s=args.request_timeout)
    app = create_app(build_batch_fn(describer), model=args.model,
                     detector=describer.detector.name, limits=limits, api_key=key)
    print(f"expblip serve: {args.model} with the {describer.detector.name} detector on "
          f"http://{args.host}:{args.port} (max batch {args.max_batch}, wait "
          f"{args.max_wait_ms:g} ms, queue {args.max_queue})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.log_level in ("info", "debug"))
    return 0
