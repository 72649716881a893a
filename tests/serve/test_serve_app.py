"""The FastAPI app with a stand-in model: API key, busy and timed-out answers, failures.

The stand-in (``FakeModel``, a test double) maps each image to one face dict and can be told
to block, to fail or to run slowly, which the real captioner cannot be made to do on cue.
"""
import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lavis_ext.serve.app import Limits, create_app


class FakeModel:
    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False
        self.batches = []

    def __call__(self, items):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([aligned for _, aligned in items])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model broke")
        return [[{"box": [0, 0, im.width, im.height], "landmarks": None, "confidence": None,
                  "caption": f"a face of {im.width}x{im.height}", "aus": [], "emotions": []}]
                for im, _ in items]


def png(size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (100, 50, 20)).save(buffer, "PNG")
    return buffer.getvalue()


def client_for(model, api_key=None, **limits):
    app = create_app(model, model="fake", detector="none-test",
                     limits=Limits(**{"max_wait_ms": 1, **limits}), api_key=api_key)
    return TestClient(app)


def test_describe_page_and_health():
    model = FakeModel()
    with client_for(model) as client:
        reply = client.post("/v1/describe", files={"image": ("a.png", png(), "image/png")})
        assert reply.status_code == 200
        assert reply.json()["faces"][0]["caption"] == "a face of 40x30"
        assert reply.json()["batch_size"] == 1 and reply.json()["image"]["width"] == 40
        page = client.get("/")
        assert page.status_code == 200 and 'id="file"' in page.text
        assert "v1/describe" in page.text and 'id="faces"' in page.text
        state = client.get("/health").json()
        assert state["status"] == "ok" and state["requests_done"] == 1
        assert state["auth"] is False and state["limits"]["max_batch"] == 16


def test_aligned_uploads_skip_detection():
    model = FakeModel()
    with client_for(model) as client:
        for flag, expected in (("1", True), ("true", True), ("0", False)):
            reply = client.post(f"/v1/describe?aligned={flag}", content=png(),
                                headers={"Content-Type": "image/png"})
            assert reply.status_code == 200
            assert reply.json()["detector"] == ("none" if expected else "none-test")
            assert model.batches[-1] == [expected]
        bad = client.post("/v1/describe?aligned=maybe", content=png(),
                          headers={"Content-Type": "image/png"})
        assert bad.status_code == 422 and "aligned" in bad.json()["error"]


def test_api_key_is_required_when_set():
    with client_for(FakeModel(), api_key="s3cret") as client:
        assert client.post("/v1/describe", content=png(),
                           headers={"Content-Type": "image/png"}).status_code == 401
        wrong = client.post("/v1/describe", content=png(),
                            headers={"Content-Type": "image/png", "X-API-Key": "nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        for header in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            ok = client.post("/v1/describe", content=png(),
                             headers={"Content-Type": "image/png", **header})
            assert ok.status_code == 200
        assert client.get("/health").json()["auth"] is True


def test_pixels_over_the_limit_are_413():
    with client_for(FakeModel(), max_pixels=1000) as client:
        reply = client.post("/v1/describe", content=png((40, 30)),
                            headers={"Content-Type": "image/png"})
        assert reply.status_code == 413 and "1200 pixels" in reply.json()["error"]


def test_a_failed_batch_is_500_and_the_next_request_succeeds():
    model = FakeModel()
    with client_for(model) as client:
        model.fail_next = True
        reply = client.post("/v1/describe", content=png(), headers={"Content-Type": "image/png"})
        assert reply.status_code == 500 and "the model broke" in reply.json()["error"]
        again = client.post("/v1/describe", content=png(), headers={"Content-Type": "image/png"})
        assert again.status_code == 200
        assert client.get("/health").json()["failed_batches"] == 1


def test_busy_server_answers_503_for_a_full_queue_and_for_timeouts():
    model = FakeModel()
    model.gate.clear()  # the model thread blocks until the gate opens
    with client_for(model, max_batch=1, max_queue=1, request_timeout_s=3) as client:
        results = {}

        def send(name):
            results[name] = client.post("/v1/describe", content=png(),
                                        headers={"Content-Type": "image/png"})

        first = threading.Thread(target=send, args=("running",))
        first.start()
        assert model.entered.wait(10)  # the first request is inside the blocked model
        second = threading.Thread(target=send, args=("queued",))
        second.start()
        while client.get("/health").json()["queue"] < 1:  # the second one waits in line
            threading.Event().wait(0.02)
        busy = client.post("/v1/describe", content=png(), headers={"Content-Type": "image/png"})
        first.join()
        second.join()
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        assert busy.headers["retry-after"] == "1"
        assert results["running"].status_code == 503
        assert "timed out" in results["running"].json()["error"]
        assert results["queued"].status_code == 503
        model.gate.set()
        ok = client.post("/v1/describe", content=png(), headers={"Content-Type": "image/png"})
        assert ok.status_code == 200
        assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("argv, words", [
    (["--max-batch", "0"], "--max-batch"),
    (["--max-body-mb", "0"], "--max-body-mb"),
    (["--api-key"], "EXPBLIP_API_KEY"),
])
def test_serve_flags_are_checked_before_loading(monkeypatch, capsys, argv, words):
    from lavis_ext.cli import main

    monkeypatch.delenv("EXPBLIP_API_KEY", raising=False)
    assert main(["serve", *argv]) == 2
    assert words in capsys.readouterr().err
