"""OpenAI Batch API mode: upload the uncached requests as JSONL, submit, poll, read back.

Batch answers cost half (see ``prices.yaml``) but arrive within 24 hours. Each batch id is
written to the cache before polling starts, so an interrupted run resumes polling the same
batch instead of submitting (and paying for) it again. Answers go into the same cache as
online answers; the normal run that follows finds them there, validates them, and retries
rejected or missing ones online.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

from lavis_ext.captions.client import LLMClient, request_line

log = logging.getLogger(__name__)
TERMINAL = ("completed", "failed", "expired", "cancelled")


async def run_batches(client: LLMClient, requests: dict[str, tuple[list[dict[str, str]],
                                                                    dict[str, Any]]],
                      *, poll_interval: float = 30.0, max_requests: int = 50_000,
                      echo: Callable[[str], None] = print) -> None:
    """Make sure every request in ``requests`` (cache key -> (messages, params)) is answered
    in the cache, as far as the Batch API answers it."""
    cache = client.cache
    for batch_id, keys, status in cache.open_batches():
        echo(f"batch {batch_id}: resuming (last status {status}, {len(keys)} requests)")
        await _finish(client, batch_id, requests, poll_interval, echo)
    todo = sorted(set(requests) - cache.contains(requests))
    for start in range(0, len(todo), max_requests):
        chunk = todo[start:start + max_requests]
        lines = [request_line(key, client.config.model, *requests[key]) for key in chunk]
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        api = client.openai_client()
        uploaded = await api.files.create(file=("expblip_batch.jsonl", payload),
                                          purpose="batch")
        created = await api.batches.create(input_file_id=uploaded.id,
                                           endpoint="/v1/chat/completions",
                                           completion_window="24h")
        cache.add_batch(created.id, uploaded.id, chunk, created.status)
        echo(f"batch {created.id}: submitted {len(chunk)} requests (file {uploaded.id})")
        await _finish(client, created.id, requests, poll_interval, echo)


async def _finish(client: LLMClient, batch_id: str,
                  requests: dict[str, tuple[list[dict[str, str]], dict[str, Any]]],
                  poll_interval: float, echo: Callable[[str], None]) -> None:
    api = client.openai_client()
    last = None
    while True:
        batch = await api.batches.retrieve(batch_id)
        if batch.status != last:
            counts = batch.request_counts
            done = f" ({counts.completed}/{counts.total} done)" if counts else ""
            echo(f"batch {batch_id}: {batch.status}{done}")
            last = batch.status
            client.cache.update_batch(batch_id, batch.status)
        if batch.status in TERMINAL:
            break
        await asyncio.sleep(poll_interval)
    answered = 0
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            content = await api.files.content(file_id)
            answered += _ingest(client, content.text, requests)
    client.cache.update_batch(batch_id, batch.status, ingested=True)
    if batch.status != "completed":
        echo(f"batch {batch_id} ended as {batch.status}; the {answered} answers it returned "
             f"are cached, the rest will be requested online")


def _ingest(client: LLMClient, text: str,
            requests: dict[str, tuple[list[dict[str, str]], dict[str, Any]]]) -> int:
    """Store the answers of a batch output (or error) file; returns how many were answers."""
    answered = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key = item["custom_id"]
            response = item.get("response") or {}
            if response.get("status_code") != 200:
                error = item.get("error") or response.get("body", {}).get("error")
                client.stats.errors["batch request error"] += 1
                log.warning("batch request %s failed: %s", key, error)
                continue
            body = response["body"]
            text_out = body["choices"][0]["message"]["content"]
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as err:
            client.stats.errors["malformed batch line"] += 1
            log.warning("batch output line %d is not a chat completion: %s", number, err)
            continue
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        messages, params = requests.get(key, ([], {}))
        client.cache.put(key, client.config.model, {"messages": messages, "params": params},
                         text_out, prompt_tokens, completion_tokens, via="batch")
        client.stats.calls += 1
        client.stats.add_usage(client.prices, client.config.model, prompt_tokens,
                               completion_tokens, batch=True)
        answered += 1
    return answered
