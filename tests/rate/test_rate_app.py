"""The JSON API of `expblip rate` (FastAPI's test client on a kit in a temporary file)."""
import json
import sqlite3

import pytest
from fastapi.testclient import TestClient

from lavis_ext.rate.app import create_app
from lavis_ext.rate.kit import build_items
from lavis_ext.rate.store import RatingStore


@pytest.fixture
def store(kit_files, tmp_path):
    build = build_items(list(kit_files.preds.items()), [(kit_files.ann, kit_files.images)])
    store = RatingStore(tmp_path / "ratings.sqlite")
    store.create(build.items, build.models, source="test")
    return store


@pytest.fixture
def client(store):
    with TestClient(create_app(store)) as client:
        yield client


def rate_item(client, rater, answer, scores, pick):
    for caption, score in zip(answer["item"]["captions"], scores):
        reply = client.post("/api/ratings", json={
            "rater": rater, "item": answer["item"]["item"], "caption": caption["caption"],
            "correctness": score, "complete": "most" if caption["caption"] == pick else None})
        assert reply.status_code == 200, reply.json()


def test_next_item_is_blind_and_shuffled_per_rater(client, store):
    answer = client.get("/api/next", params={"rater": "ana"}).json()
    assert answer["rater"] == "ana" and answer["done"] == 0 and answer["total"] == 12
    item = answer["item"]
    assert item["image"] == f"/api/images/{item['item']}"
    assert len(item["captions"]) == 2
    assert set(item) == {"item", "image", "captions"}
    assert all(set(c) == {"caption", "text", "correctness", "complete"}
               for c in item["captions"])
    # Model, dataset and file names stay on the server (the fixture's caption texts name
    # their model, so they are left out of this check).
    text = json.dumps({**answer, "item": {**item, "captions": [
        {k: v for k, v in c.items() if k != "text"} for c in item["captions"]]}})
    for secret in ("mix", "exp", "bp4d", "rafdb", "disfa", ".png"):
        assert secret not in text
    assert all(c["correctness"] is None and c["complete"] is None for c in item["captions"])
    image = client.get(item["image"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    # Each rater has an order of their own, the same on every call.
    assert store.order("ana") == store.order("ana")
    assert store.order("ana") != store.order("bea")
    assert sorted(store.order("ana")) == sorted(store.order("bea")) == sorted(store.item_ids())
    orders = {tuple(c["text"][:3] for c in store.next_item(name)["item"]["captions"])
              for name in (f"r{i}" for i in range(12))}
    assert orders == {("mix", "exp"), ("exp", "mix")}  # captions shuffled per rater too


def test_progress_is_kept_and_a_half_rated_item_resumes(client, store):
    first = client.get("/api/next?rater=ana").json()
    rate_item(client, "ana", first, [7, 4], first["item"]["captions"][1]["caption"])
    second = client.get("/api/next?rater=ana").json()
    assert second["done"] == 1 and second["item"]["item"] != first["item"]["item"]
    assert second["item"]["item"] == store.order("ana")[1]
    one = second["item"]["captions"][0]
    reply = client.post("/api/ratings", json={"rater": "ana", "item": second["item"]["item"],
                                              "caption": one["caption"], "correctness": 9,
                                              "complete": "least"})
    assert reply.json() == {"saved": True, "rater": "ana", "item": second["item"]["item"],
                            "caption": one["caption"]}
    again = client.get("/api/next?rater=ana").json()
    assert again["done"] == 1 and again["item"]["item"] == second["item"]["item"]
    assert [(c["caption"], c["correctness"], c["complete"])
            for c in again["item"]["captions"]] == [
        (one["caption"], 9, "least"), (second["item"]["captions"][1]["caption"], None, None)]
    # Another rater starts from nothing.
    assert client.get("/api/next?rater=bea").json()["done"] == 0
    assert client.get("/health").json() == {"status": "ok", "items": 12, "models": 2,
                                            "raters": 1, "ratings": 3}


def test_one_row_per_rater_item_model_and_one_pick_of_each_kind(client, store):
    answer = client.get("/api/next?rater=ana").json()
    a, b = (c["caption"] for c in answer["item"]["captions"])
    rate_item(client, "ana", answer, [5, 6], a)
    rate_item(client, "ana", answer, [8, 6], b)   # changed their mind
    rows = sqlite3.connect(store.path).execute(
        "SELECT model, correctness, complete FROM ratings ORDER BY model").fetchall()
    assert len(rows) == 2 and [r.complete for r in store.ratings()].count("most") == 1
    (picked,) = [r for r in store.ratings() if r.complete == "most"]
    assert picked.correctness == 6  # b's row: the later pick replaced the first one
    assert {r.correctness for r in store.ratings()} == {8, 6}
    # Picking a as most complete alone takes the pick from b (one per rater and item).
    item = answer["item"]["item"]
    client.post("/api/ratings", json={"rater": "ana", "item": item, "caption": a,
                                      "correctness": 8, "complete": "most"})
    client.post("/api/ratings", json={"rater": "ana", "item": item, "caption": b,
                                      "correctness": 6, "complete": "least"})
    assert sorted((r.correctness, r.complete) for r in store.ratings()) == [
        (6, "least"), (8, "most")]


@pytest.mark.parametrize("body, status, words", [
    ("not json", 400, "not JSON"),
    ([1, 2], 400, "JSON object"),
    ({"rater": "ana"}, 422, "missing field(s): item, caption, correctness, complete"),
    ({"correctness": 0}, 422, "correctness: expected a whole number from 1 to 10"),
    ({"correctness": 11}, 422, "correctness: expected a whole number from 1 to 10"),
    ({"correctness": 7.5}, 422, "correctness: expected a whole number from 1 to 10"),
    ({"correctness": True}, 422, "correctness: expected a whole number from 1 to 10"),
    ({"complete": "yes"}, 422, 'complete: expected "most", "least" or null'),
    ({"complete": True}, 422, 'complete: expected "most", "least" or null'),
    ({"rater": "  "}, 422, "rater: expected a non-empty name"),
    ({"rater": "x" * 81}, 422, "rater: expected at most 80"),
    ({"item": "i-nope"}, 422, "item 'i-nope' is not in this kit"),
    ({"caption": "c-nope"}, 422, "caption 'c-nope' is not a caption of item"),
    ({"extra": 1}, 422, "unknown field(s): extra"),
])
def test_bad_ratings_are_refused_with_the_field_named(client, store, body, status, words):
    answer = client.get("/api/next?rater=ana").json()["item"]
    good = {"rater": "ana", "item": answer["item"], "caption": answer["captions"][0]["caption"],
            "correctness": 5, "complete": "most"}
    if isinstance(body, dict):
        body = {**good, **body}
        if "missing" in words:
            body = {"rater": "ana"}
    content = body if isinstance(body, str) else json.dumps(body)
    reply = client.post("/api/ratings", content=content,
                        headers={"Content-Type": "application/json"})
    assert reply.status_code == status and words in reply.json()["error"], reply.json()
    assert store.ratings() == []


def test_bad_rater_and_unknown_image(client):
    reply = client.get("/api/next")
    assert reply.status_code == 422 and "rater" in reply.json()["error"]
    reply = client.get("/api/images/i000")
    assert reply.status_code == 404 and "no image" in reply.json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and "api/next" in page.text and 'id="signin"' in page.text
