import asyncio
import time

import pytest

from lavis_ext.captions import prompts
from lavis_ext.captions.cache import AnswerCache
from lavis_ext.captions.client import (ClientConfig, FatalLLMError, LLMClient, RequestFailed,
                                       Stats)
from lavis_ext.captions.cost import PriceTable

from captions_testlib import fast_config

MESSAGES = prompts.au_messages([4, 7])
PARAMS = {"temperature": 0.7, "max_tokens": 100, "seed": 0}


def _complete(config, cache_path, messages=MESSAGES, n=1):
    async def go():
        with AnswerCache(cache_path) as cache:
            client = LLMClient(config, cache, PriceTable.load(), Stats(), concurrency=4)
            try:
                answers = await asyncio.gather(*[client.complete(messages, PARAMS)
                                                 for _ in range(n)])
            finally:
                await client.close()
            return answers, client.stats
    return asyncio.run(go())


def test_retries_transient_faults_then_caches(make_server, tmp_path):
    srv = make_server(faults={"sequence": ["500", "timeout", "malformed", "no_choices"],
                              "slow_seconds": 6.0})
    # the stalled answer comes 4x later than the timeout; a healthy one has 1.5 s under load
    config = fast_config(srv, timeout=1.5)
    (answer,), stats = _complete(config, tmp_path / "c.sqlite")
    assert "lowers the brow" in answer.text and not answer.cached
    assert stats.retried == 4 and stats.calls == 1 and srv.chat_requests == 5
    (again,), stats = _complete(config, tmp_path / "c.sqlite")
    assert again.cached and again.text == answer.text and srv.chat_requests == 5
    assert stats.cache_hits == 1 and stats.calls == 0


def test_honours_retry_after_and_pays_once_for_duplicates(make_server, tmp_path):
    srv = make_server(faults={"sequence": ["429"], "retry_after": 0.4})
    start = time.monotonic()
    answers, stats = _complete(fast_config(srv), tmp_path / "c.sqlite", n=3)
    assert time.monotonic() - start >= 0.4
    assert len({a.text for a in answers}) == 1
    assert srv.chat_requests == 2 and stats.calls == 1 and stats.cache_hits == 2
    assert stats.errors["429 rate limited"] == 1


def test_gives_up_after_budget(make_server, tmp_path):
    srv = make_server(faults={"rates": {"500": 1.0}})
    with pytest.raises(RequestFailed, match="gave up after 3 attempts"):
        _complete(fast_config(srv, max_attempts=3), tmp_path / "c.sqlite")
    assert srv.chat_requests == 3


def test_bad_key_is_fatal_and_missing_key_is_explained(make_server, tmp_path, monkeypatch):
    srv = make_server(api_key="the-right-key")
    with pytest.raises(FatalLLMError, match="refused"):
        _complete(fast_config(srv), tmp_path / "c.sqlite")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(FatalLLMError, match="OPENAI_API_KEY"):
        ClientConfig().api_key()
    assert ClientConfig(base_url=srv.base_url).api_key().startswith("sk-local")


def test_config_rejects_keys_in_files_and_unknown_options():
    with pytest.raises(ValueError, match="environment"):
        ClientConfig.from_mapping({"api_key": "sk-x"})
    with pytest.raises(ValueError, match="unknown LLM client option"):
        ClientConfig.from_mapping({"modle": "x"})
    params = ClientConfig(max_tokens_param="max_completion_tokens", seed=10).request_params(
        {"max_tokens": 5, "temperature": 1}, attempt=2)
    assert params == {"max_completion_tokens": 5, "temperature": 1, "seed": 12}
