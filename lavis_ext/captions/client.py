"""The LLM client: the official ``openai`` package behind a cache, retries and accounting.

Why not the openai client's own retries: we need to count retries, share one back-off across
all workers when the server says 429, honour ``Retry-After`` up to our own limit, and treat a
malformed answer like a transient error. The client is created with ``max_retries=0``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from email.utils import parsedate_to_datetime
from typing import Any

import openai

from lavis_ext.captions.cache import AnswerCache, cache_key
from lavis_ext.captions.cost import PriceTable
from lavis_ext.errors import InputError

log = logging.getLogger(__name__)
LOCAL_PLACEHOLDER_KEY = "sk-local-no-key"
VARIANT_SEED_STRIDE = 1000  # variant v uses seeds seed + 1000 v + attempt


class FatalLLMError(RuntimeError):
    """An error that retrying cannot fix (bad key, unknown model, wrong URL)."""


class RequestFailed(RuntimeError):
    """One request failed for good (retry budget spent, or the server refused it)."""


@dataclass
class ClientConfig:
    """Where and how to call the LLM. Key and URL default to the environment."""
    model: str = "gpt-4o-mini"
    base_url: str | None = None  # default: $OPENAI_BASE_URL, else api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key, never the key
    timeout: float = 60.0  # seconds per request
    max_attempts: int = 6  # tries per request on 429 / 5xx / timeouts / malformed answers
    backoff_base: float = 1.0  # first back-off, seconds; doubles each retry
    backoff_max: float = 60.0
    jitter: float = 0.5  # back-off is multiplied by a random factor in [1, 1 + jitter]
    max_retry_after: float = 300.0  # longest Retry-After honoured, seconds
    answer_attempts: int = 3  # answers tried per caption before a rejection is final
    seed: int | None = 0  # sent as seed + attempt, so a retry after a rejection differs
    temperature: float | None = None  # None: the prompt file's value
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"  # "max_completion_tokens" for newer OpenAI models
    prompt_set: str = "paper"  # bundled LLM prompts: paper (Figs. 2 and 4) or concise
    prompt_dir: str | None = None  # a folder with au_caption.yaml, fusion.yaml, rules.yaml
    au_prompt: str | None = None  # one AU prompt file (wins over the two above)
    fusion_prompt: str | None = None  # one fusion prompt file
    variants: int = 1  # au-llm / fuse: up to K distinct answers per identical prompt

    def __post_init__(self) -> None:
        if not isinstance(self.variants, int) or isinstance(self.variants, bool) \
                or self.variants < 1:
            raise InputError(f"variants must be an integer >= 1, got {self.variants!r}")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> "ClientConfig":
        if "api_key" in data:
            raise InputError(f"{where}: put the API key in the environment (name it with "
                             f"api_key_env), not in a file")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{where}: unknown LLM client option(s) {unknown}; known: "
                             f"{sorted(known)}")
        return cls(**data)

    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or None

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.resolved_base_url():
            return LOCAL_PLACEHOLDER_KEY  # local servers (vLLM, llama.cpp, Ollama) need none
        raise FatalLLMError(f"no API key: set ${self.api_key_env} (or give --base-url for a "
                            f"local server that needs none)")

    def request_params(self, prompt_params: dict[str, Any], attempt: int,
                       variant: int = 0) -> dict[str, Any]:
        """Parameters sent with a request; also part of its cache key. Variant ``v`` of a
        prompt (``variants``) samples with its own seed, so it is its own request."""
        params = dict(prompt_params)
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if "max_tokens" in params and self.max_tokens_param != "max_tokens":
            params[self.max_tokens_param] = params.pop("max_tokens")
        if self.seed is not None:
            params["seed"] = int(self.seed) + attempt + VARIANT_SEED_STRIDE * variant
        return params


@dataclass
class Stats:
    """What a run did and spent; printed as its summary."""
    calls: int = 0  # requests answered by the server in this run
    cache_hits: int = 0
    retried: int = 0  # requests repeated after 429 / 5xx / timeout / malformed answer
    rejected: int = 0  # answers that failed validation
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None once any call had an unknown price
    errors: Counter = field(default_factory=Counter)  # transient error kinds seen
    rejections: Counter = field(default_factory=Counter)  # rejection reasons (short form)

    def add_usage(self, prices: PriceTable, model: str, prompt_tokens: int,
                  completion_tokens: int, batch: bool = False) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        usd = prices.cost(model, prompt_tokens, completion_tokens, batch=batch)
        self.cost_usd = None if usd is None or self.cost_usd is None else self.cost_usd + usd


@dataclass(frozen=True)
class Answer:
    text: str | None
    key: str
    cached: bool


def _retry_after(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers if error.response is not None else {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            try:  # an HTTP date
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                continue
    return None


class LLMClient:
    """Cached chat completions with bounded retries. Use inside one asyncio loop."""

    def __init__(self, config: ClientConfig, cache: AnswerCache, prices: PriceTable,
                 stats: Stats | None = None, *, concurrency: int = 8):
        self.config = config
        self.cache = cache
        self.prices = prices
        self.stats = stats or Stats()
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._inflight: dict[str, asyncio.Future] = {}
        self._pause_until = 0.0  # shared back-off after a 429
        self._client: openai.AsyncOpenAI | None = None

    def openai_client(self) -> openai.AsyncOpenAI:
        """The underlying openai client (created on first use, so dry runs need no key)."""
        if self._client is None:
            self._client = openai.AsyncOpenAI(api_key=self.config.api_key(),
                                              base_url=self.config.resolved_base_url(),
                                              timeout=self.config.timeout, max_retries=0)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def key(self, messages: list[dict[str, str]], params: dict[str, Any],
            variant: int = 0) -> str:
        return cache_key(self.config.model, messages, params, variant)

    async def complete(self, messages: list[dict[str, str]], params: dict[str, Any],
                       variant: int = 0) -> Answer:
        """The answer to a request: from the cache, from an identical request in flight, or
        from the server (then cached before it is returned). ``variant`` > 0 names another
        answer to the same request (its own cache entry)."""
        key = self.key(messages, params, variant)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return Answer(hit.answer, key, True)
        if key in self._inflight:  # the same question asked twice in one run: pay once
            self.stats.cache_hits += 1
            return Answer(await asyncio.shield(self._inflight[key]), key, True)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            text = await self._call(messages, params, key)
            future.set_result(text)
            return Answer(text, key, False)
        except BaseException as err:
            future.set_exception(err if isinstance(err, Exception) else RequestFailed("cancelled"))
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _post_chat(self, messages: list[dict[str, str]],
                         params: dict[str, Any]) -> dict[str, Any]:
        """POST /chat/completions through the openai client's generic ``post``.

        Same auth, base URL, timeout and error classes as ``chat.completions.create``, but
        without its per-call request transformation and response model building (about 6 ms
        of CPU per call, which capped throughput near 100 calls/s). We need three fields of
        the answer, read from its JSON.
        """
        body = {"model": self.config.model, "messages": messages, **params}
        raw = await self.openai_client().post("/chat/completions", body=body, cast_to=bytes,
                                        options={"security": {"bearer_auth": True}})
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return data

    def _backoff(self, retry: int) -> float:
        base = min(self.config.backoff_max, self.config.backoff_base * 2 ** retry)
        return base * (1 + self.config.jitter * random.random())

    async def _call(self, messages: list[dict[str, str]], params: dict[str, Any],
                    key: str) -> str | None:
        last = ""
        for attempt in range(self.config.max_attempts):
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                async with self._semaphore:
                    response = await self._post_chat(messages, params)
                text = response["choices"][0]["message"]["content"]
                usage = response.get("usage") or {}
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
                completion_tokens = int(usage.get("completion_tokens") or 0)
            except openai.RateLimitError as err:
                delay = _retry_after(err)
                if delay is not None and delay > self.config.max_retry_after:
                    raise RequestFailed(f"rate limited; server asks to wait {delay:.0f} s, "
                                        f"more than max_retry_after") from None
                delay = self._backoff(attempt) if delay is None else delay
                self._pause_until = max(self._pause_until, time.monotonic() + delay)
                last = "429 rate limited"
            except (openai.APITimeoutError, openai.InternalServerError) as err:
                delay, last = self._backoff(attempt), type(err).__name__
            except openai.APIConnectionError as err:
                delay, last = self._backoff(attempt), f"connection error ({err})"
            except (openai.AuthenticationError, openai.PermissionDeniedError,
                    openai.NotFoundError) as err:
                raise FatalLLMError(f"the LLM server refused the request: {err}") from None
            except openai.APIStatusError as err:
                if err.status_code in (408, 409) or err.status_code >= 500:
                    delay, last = self._backoff(attempt), f"HTTP {err.status_code}"
                else:
                    raise RequestFailed(f"HTTP {err.status_code}: {err.message}") from None
            except (ValueError, TypeError, KeyError, IndexError) as err:
                # 200 with a body that is not a chat completion (bad JSON, no choices)
                delay, last = self._backoff(attempt), f"malformed answer ({type(err).__name__})"
            else:
                self.stats.calls += 1
                self.stats.add_usage(self.prices, self.config.model, prompt_tokens,
                                     completion_tokens)
                self.cache.put(key, self.config.model, {"messages": messages,
                                                        "params": params},
                               text, prompt_tokens, completion_tokens)
                return text
            self.stats.errors[last.split(" (")[0]] += 1
            if attempt + 1 < self.config.max_attempts:
                self.stats.retried += 1
                log.info("retrying in %.2f s after %s (attempt %d/%d)", delay, last,
                         attempt + 1, self.config.max_attempts)
                await asyncio.sleep(delay)
        raise RequestFailed(f"gave up after {self.config.max_attempts} attempts; last error: "
                            f"{last}")


def request_line(custom_id: str, model: str, messages: list[dict[str, str]],
                 params: dict[str, Any]) -> str:
    """One line of a Batch API input file."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": messages, **params}},
                      ensure_ascii=False)
