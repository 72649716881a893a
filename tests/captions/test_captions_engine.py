import json
import signal

import pytest

from captions_testlib import SECRET, au_records, emotion_records, fast_config
from lavis_ext.captions import rules
from lavis_ext.captions.cost import PriceTable
from lavis_ext.captions.engine import synthesize_records
from lavis_ext.captions.validate import au_codes, emotion_words, validate_answer
from lavis_ext.data.records import new_record, validate_record


def _check_outcome(records, kind):
    """Every record ends with a valid caption or a recorded failure; no AU codes anywhere."""
    for record in records:
        validate_record(record)
        texts = (record.get("captions") or {}).get(kind)
        failure = (record.get("failures") or {}).get(kind)
        assert bool(texts) != bool(failure), record
        for text in record["caption"]:
            assert not au_codes(text), text
        for text in texts or []:
            if kind == "au-llm":
                assert not emotion_words(text), text


def test_au_llm_under_faults_every_record_captioned_or_failed(make_server, tmp_path):
    srv = make_server(latency=0.01, faults={
        "rates": {"429": 0.08, "500": 0.08, "timeout": 0.04, "empty": 0.08, "malformed": 0.05,
                  "restricted": 0.1, "emotion": 0.1}, "seed": 3, "retry_after": 0.02,
        "slow_seconds": 6.0})  # 4x the client's timeout; a healthy answer has 1.5 s under load
    records = au_records(40, neutral_every=10)
    saves = []
    summary = synthesize_records(records, "au-llm", client_config=fast_config(
        srv, timeout=1.5, answer_attempts=2, max_attempts=3), cache_path=tmp_path / "c.sqlite",
        concurrency=6, progress=False, save=lambda recs: saves.append(len(recs)), save_every=5)
    _check_outcome(records, "au-llm")
    s = summary.stats
    assert summary.added + summary.failed == 40 and summary.added >= 30
    assert s.rejected > 0 and s.retried > 0 and len(saves) >= 7
    assert sum(r["caption"] == [rules.neutral_au_caption()] for r in records) == 4
    failed = [r for r in records if r.get("failures")]
    assert all("rejected" in r["failures"]["au-llm"] or "request failed" in
               r["failures"]["au-llm"] for r in failed)
    # a rerun pays only for failed records (their retries), never for finished ones
    before = srv.chat_requests
    srv.faults.rates.clear()
    again = synthesize_records(records, "au-llm", client_config=fast_config(srv),
                               cache_path=tmp_path / "c.sqlite", progress=False)
    assert again.already_done == summary.added and again.failed == 0
    assert again.stats.calls <= len(failed) * 2 and srv.chat_requests - before == again.stats.calls
    _check_outcome(records, "au-llm")


def test_rerun_of_same_records_makes_no_call(server, tmp_path):
    first = au_records(12)
    summary = synthesize_records(first, "au-llm", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", progress=False)
    assert summary.stats.calls == 12 and summary.stats.cost_usd > 0
    fresh = au_records(12)  # the same labels, no captions yet: all from the cache
    summary = synthesize_records(fresh, "au-llm", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", progress=False)
    assert summary.stats.calls == 0 and summary.stats.cache_hits == 12
    assert server.chat_requests == 12 and not server.repeated_requests()
    assert [r["caption"] for r in fresh] == [r["caption"] for r in first]


def test_rule_kinds_and_fusion(server, tmp_path):
    records = au_records(6) + emotion_records(6)
    both = new_record("b.jpg", "both", "rafdb", "train", aus={"6": 1, "12": 1},
                      emotions=["happiness"])
    records.append(both)
    for kind in ("au-rule", "emotion-rule"):
        summary = synthesize_records(records, kind, progress=False)
        assert summary.added == 7 and summary.not_applicable == 6
    assert both["caption"] == [rules.au_caption([6, 12]), rules.emotion_caption(["happiness"])]
    summary = synthesize_records(records, "concat", progress=False)
    assert both["captions"]["concat"] == [rules.concat_caption(*both["caption"][:2])]
    assert summary.added == 1 and summary.failed == 12
    summary = synthesize_records(records, "fuse", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", progress=False)
    assert summary.added == 1 and summary.failed == 12 and summary.stats.calls == 1
    fused = both["captions"]["fuse"][0]
    # coded faces with no AU present get the predetermined description (paper §3.1) by rule
    # too, and so keep their AU text in concat and fuse
    calm = [new_record("c.jpg", "calm", "emotionet", "train", aus={"6": 0, "12": 0},
                       emotions=["neutral"])]
    for kind in ("au-rule", "emotion-rule", "concat"):
        assert synthesize_records(calm, kind, progress=False).added == 1
    assert calm[0]["captions"]["au-rule"] == [rules.neutral_au_caption()]
    assert calm[0]["captions"]["concat"][0].startswith(rules.neutral_au_caption())
    assert "happy" in fused and validate_answer(fused, "fuse").ok
    assert "no emotion caption to fuse" in records[0]["failures"]["fuse"]
    assert "no AU caption to fuse" in records[7]["failures"]["fuse"]
    bare = [new_record("n.jpg", "bare", "x", "train")]
    synthesize_records(bare, "concat", progress=False)
    assert bare[0]["failures"]["concat"].startswith("no AU caption (looked in")
    assert "and no emotion caption" in bare[0]["failures"]["concat"]
    # Cat-BLIP joins the rule AU caption even when an LLM AU caption is there (paper §4.3)
    llm = dict(both, caption=list(both["caption"]), captions={
        "au-llm": ["The cheeks rise and the lip corners are pulled up."],
        "au-rule": [rules.au_caption([6, 12])], "emotion-rule": [rules.emotion_caption(["happiness"])]})
    synthesize_records([llm], "concat", progress=False)
    assert llm["captions"]["concat"][0].startswith(rules.au_caption([6, 12]))
    _check_outcome([both], "fuse")


def test_dry_run_calls_and_changes_nothing(server, tmp_path):
    records = au_records(5, neutral_every=5)
    snapshot = json.dumps(records)
    lines = []
    summary = synthesize_records(records, "au-llm", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", dry_run=True,
                                 progress=False, echo=lines.append)
    assert server.chat_requests == 0 and json.dumps(records) == snapshot
    assert not (tmp_path / "c.sqlite").exists()
    assert summary.planned_calls == 4 and summary.estimated_prompt_tokens > 4 * 100
    assert summary.estimated_cost_usd > 0 and "calls needed" in summary.format()
    assert any("[system]" in line for line in lines)
    unknown = synthesize_records(records, "au-llm", client_config=fast_config(
        server, model="my-llama"), cache_path=tmp_path / "c.sqlite", dry_run=True,
        progress=False, echo=lines.append, prices=PriceTable.load())
    assert unknown.estimated_cost_usd is None and "unknown" in unknown.format()


def test_unknown_model_cost_is_unknown_not_zero(server, tmp_path):
    summary = synthesize_records(au_records(2), "au-llm", client_config=fast_config(
        server, model="local-llama"), cache_path=tmp_path / "c.sqlite", progress=False)
    assert summary.stats.calls == 2 and summary.stats.cost_usd is None
    assert "cost             unknown" in summary.format()


def test_batch_mode_submits_once_and_reads_results_into_cache(server, tmp_path):
    records = au_records(8)
    lines = []
    summary = synthesize_records(records, "au-llm", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", progress=False, batch=True,
                                 batch_poll=0.05, echo=lines.append)
    assert len(server.batches) == 1 and summary.added == 8
    assert summary.stats.calls == 8 and summary.stats.cache_hits == 8
    assert server.chat_requests == 8 and not server.repeated_requests()
    batch_cost = summary.stats.cost_usd
    online = synthesize_records(au_records(8, seed=1), "au-llm", client_config=fast_config(
        server), cache_path=tmp_path / "c2.sqlite", progress=False)
    assert batch_cost == pytest.approx(online.stats.cost_usd * 0.5, rel=0.2)
    assert any("submitted 8 requests" in line for line in lines)
    _check_outcome(records, "au-llm")
    # everything is cached now: a second batch run submits nothing
    synthesize_records(au_records(8), "au-llm", client_config=fast_config(server),
                       cache_path=tmp_path / "c.sqlite", progress=False, batch=True,
                       batch_poll=0.05, echo=lines.append)
    assert len(server.batches) == 1


def test_api_key_is_in_no_cache_file(server, tmp_path):
    synthesize_records(au_records(3), "au-llm", client_config=fast_config(server),
                       cache_path=tmp_path / "c.sqlite", progress=False)
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


def test_batch_submitted_before_a_crash_is_polled_not_resubmitted(server, tmp_path):
    import openai

    from lavis_ext.captions import prompts
    from lavis_ext.captions.cache import AnswerCache, cache_key
    from lavis_ext.captions.client import request_line
    from lavis_ext.data.records import present_aus

    records = au_records(5)
    config = fast_config(server)
    params = config.request_params(prompts.prompt_params("au_caption"), 0)
    requests = {cache_key(config.model, m, params): m for m in
                (prompts.au_messages(present_aus(r)) for r in records)}
    api = openai.OpenAI(api_key=SECRET, base_url=server.base_url)
    payload = "\n".join(request_line(k, config.model, m, params) for k, m in requests.items())
    uploaded = api.files.create(file=("in.jsonl", payload.encode()), purpose="batch")
    batch = api.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    with AnswerCache(tmp_path / "c.sqlite") as cache:  # the crashed run got this far
        cache.add_batch(batch.id, uploaded.id, list(requests), batch.status)
    lines = []
    summary = synthesize_records(records, "au-llm", client_config=config,
                                 cache_path=tmp_path / "c.sqlite", progress=False, batch=True,
                                 batch_poll=0.05, echo=lines.append)
    assert any("resuming" in line for line in lines) and len(server.batches) == 1
    assert summary.added == 5 and server.chat_requests == 5


def test_ctrl_c_saves_a_partial_file_that_a_rerun_completes(make_server, tmp_path):
    srv = make_server(latency=0.02)
    records = au_records(20)
    saved = []

    def save(recs):
        saved.append(json.loads(json.dumps(recs)))
        if len(saved) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the run

    summary = synthesize_records(records, "au-llm", client_config=fast_config(srv),
                                 cache_path=tmp_path / "c.sqlite", concurrency=2,
                                 progress=False, save=save, save_every=3)
    assert summary.interrupted and len(saved) == 3  # the final save ran after the interrupt
    partial = saved[-1]
    done = sum(bool(r.get("captions")) for r in partial)
    assert 6 <= done < 20 and all(validate_record(r) for r in partial)
    calls_before = srv.chat_requests
    again = synthesize_records(partial, "au-llm", client_config=fast_config(srv),
                               cache_path=tmp_path / "c.sqlite", progress=False)
    assert again.already_done == done and again.added == 20 - done
    assert not srv.repeated_requests() or srv.chat_requests - calls_before < 20 - done + 2
    _check_outcome(partial, "au-llm")
