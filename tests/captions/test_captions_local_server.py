import itertools
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from lavis_ext.captions import prompts, rules
from lavis_ext.captions.local_server import LocalLLMServer, compose_answer, parse_aus
from support.llm_server import FaultPlan, FaultyLLMServer
from lavis_ext.captions.validate import validate_answer
from lavis_ext.facs import ACTION_UNITS, AU_NUMBERS


def test_au_answers_describe_the_asked_aus_without_codes_or_emotions():
    for aus in [[n] for n in AU_NUMBERS] + [list(c) for c in itertools.combinations(
            [1, 4, 6, 12, 17, 25, 43], 3)]:
        messages = prompts.au_messages(aus)
        assert parse_aus(messages[-1]["content"]) == sorted(aus)
        for variant in range(2):
            text = compose_answer(messages, variant)
            verdict = validate_answer(text, "au-llm")
            assert verdict.ok, (aus, text, verdict.reason)
            for n in aus:  # each action is described with the facs verb
                assert ACTION_UNITS[n].verb.split()[-1] in text


def test_fusion_answer_links_actions_to_the_emotion():
    au = rules.au_caption([6, 12])
    text = compose_answer(prompts.fusion_messages(au, rules.emotion_caption(["happiness"])))
    assert text.startswith("The person raises cheek and pulls lip corner.")
    assert "happy" in text and "cheek raiser" in text and "lip corner puller" in text
    assert validate_answer(text, "fuse").ok
    llm_style = compose_answer(prompts.au_messages([4, 6, 12]))
    text = compose_answer(prompts.fusion_messages(llm_style, "The face shows joy."))
    assert text.startswith(llm_style.rstrip(".")) and "looks happy" in text
    assert "the cheek raiser and the lip corner puller are typical" in text


def test_openai_client_against_server_with_faults_and_counts():
    plan = FaultPlan(sequence=["429", "500", "empty", "restricted"], retry_after=0.25)
    with FaultyLLMServer(faults=plan, api_key="k1") as server:
        client = openai.OpenAI(api_key="k1", base_url=server.base_url, max_retries=0)
        messages = prompts.au_messages([1])
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="m", messages=messages)
        assert err.value.response.headers["retry-after"] == "1"
        assert err.value.response.headers["retry-after-ms"] == "250"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=messages)
        empty = client.chat.completions.create(model="m", messages=messages)
        assert empty.choices[0].message.content == ""
        bad = client.chat.completions.create(model="m", messages=messages)
        assert "AU 12" in bad.choices[0].message.content
        good = client.chat.completions.create(model="m", messages=messages)
        assert "inner eyebrow" in good.choices[0].message.content
        assert server.chat_requests == 5 and list(server.repeated_requests().values()) == [5]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="wrong", base_url=server.base_url,
                          max_retries=0).models.list()


def test_embeddings_are_deterministic_and_similar_for_similar_text(server):
    client = openai.OpenAI(api_key="x", base_url=server.base_url)
    data = client.embeddings.create(model="e", input=["the brows rise", "the brows rise",
                                                      "lips pressed together"]).data
    a, b, c = (d.embedding for d in data)
    assert a == b and len(a) == 64
    assert sum(x * y for x, y in zip(a, b)) > sum(x * y for x, y in zip(a, c))


def test_unknown_fault_name_is_rejected():
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan(sequence=["explode"])


def test_package_stand_in_answers_chat_and_models_only():
    with LocalLLMServer(latency=0.2) as server:
        client = openai.OpenAI(api_key="any", base_url=server.base_url, max_retries=0)
        assert [m.id for m in client.models.list()] == ["local-template"]
        start = time.monotonic()
        answer = client.chat.completions.create(model="m", messages=prompts.au_messages([12]))
        assert time.monotonic() - start >= 0.2  # the latency is a floor, whatever the load
        assert "lip corner" in answer.choices[0].message.content
        assert answer.usage.prompt_tokens > 0
        for route in ("/embeddings", "/batches"):  # test-only routes live in tests/support
            request = urllib.request.Request(server.base_url + route, data=b"{}", method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request)
            assert err.value.code == 404
        with pytest.raises(openai.BadRequestError, match="'messages' must be a list"):
            client.chat.completions.create(model="m", messages="not a list")


def test_batch_endpoints_answer_good_lines_and_report_bad_ones(server):
    from lavis_ext.captions.client import request_line

    client = openai.OpenAI(api_key="x", base_url=server.base_url)
    good = request_line("k1", "m", prompts.au_messages([9]), {"seed": 0})
    uploaded = client.files.create(file=("b.jsonl", f"{good}\nnot json\n".encode()),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    for _ in range(100):
        batch = client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        time.sleep(0.02)
    assert batch.status == "completed" and batch.request_counts.failed == 1
    out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert out[0]["custom_id"] == "k1"
    assert "wrinkles the nose" in out[0]["response"]["body"]["choices"][0]["message"]["content"]
    errors = client.files.content(batch.error_file_id).text
    assert "line 2" in errors
