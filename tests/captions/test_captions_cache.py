from lavis_ext.captions.cache import AnswerCache, cache_key

MSG = [{"role": "user", "content": "hi"}]


def test_key_depends_on_model_messages_and_params():
    key = cache_key("m", MSG, {"temperature": 0.7, "seed": 0})
    assert key == cache_key("m", list(MSG), {"seed": 0, "temperature": 0.7})
    assert key != cache_key("m2", MSG, {"temperature": 0.7, "seed": 0})
    assert key != cache_key("m", MSG, {"temperature": 0.7, "seed": 1})
    assert key != cache_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.7,
                                                                      "seed": 0})


def test_answers_persist_in_wal_mode(tmp_path):
    path = tmp_path / "c.sqlite"
    with AnswerCache(path) as cache:
        cache.put("k", "m", {"messages": MSG}, "answer", 5, 2)
        mode = cache._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with AnswerCache(path) as cache:
        hit = cache.get("k")
        assert (hit.answer, hit.prompt_tokens, hit.completion_tokens) == ("answer", 5, 2)
        assert cache.get("other") is None
        assert cache.contains(["k", "other"]) == {"k"} and len(cache) == 1
        cache.add_batch("b1", "f1", ["k"], "validating")
        assert cache.open_batches() == [("b1", ["k"], "validating")]
        cache.update_batch("b1", "completed", ingested=True)
        assert cache.open_batches() == []
