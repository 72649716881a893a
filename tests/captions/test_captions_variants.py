"""--variants K: up to K answers per identical prompt, each cached, assigned by image id."""
from captions_testlib import fast_config
from lavis_ext.captions.cache import cache_key
from lavis_ext.captions.client import ClientConfig
from lavis_ext.captions.engine import synthesize_records
from lavis_ext.cli import main
from lavis_ext.data.records import new_record, save_records

import pytest


def same_au_set(n: int, aus=(6, 12)) -> list[dict]:
    return [new_record(f"f/{i}.jpg", f"frame-{i}", "bp4d", "train",
                       aus={str(a): 1 for a in aus}) for i in range(n)]


def test_k_variants_per_identical_prompt_cached_and_assigned_by_image_id(server, tmp_path):
    records = same_au_set(7) + same_au_set(2, aus=(4,))
    for i, r in enumerate(records[7:]):
        r["image_id"] = f"other-{i}"
    cache = tmp_path / "c.sqlite"
    lines = []
    plan = synthesize_records(records, "au-llm", client_config=fast_config(server, variants=3),
                              cache_path=cache, dry_run=True, progress=False,
                              echo=lines.append)
    assert plan.planned_calls == 3 + 2  # min(7, 3) + min(2, 3)
    assert any("variants K=3: 9 records, 2 distinct prompts, 5 requests" in l for l in lines)
    one = synthesize_records([dict(r) for r in records], "au-llm", dry_run=True,
                             client_config=fast_config(server), cache_path=cache,
                             progress=False, echo=lines.append)
    assert one.planned_calls == 2 and one.estimated_cost_usd < plan.estimated_cost_usd
    summary = synthesize_records(records, "au-llm", client_config=fast_config(server, variants=3),
                                 cache_path=cache, progress=False)
    assert summary.stats.calls == 5 and summary.added == 9
    texts = [r["captions"]["au-llm"][0] for r in records[:7]]
    assert len(set(texts)) >= 2  # the stand-in server answers each seed its own way
    # same records, any order: the same variant, all from the cache
    again = same_au_set(7)[::-1]
    summary = synthesize_records(again, "au-llm", client_config=fast_config(server, variants=3),
                                 cache_path=cache, progress=False)
    assert summary.stats.calls == 0 and summary.stats.cache_hits == 7
    assert {r["image_id"]: r["captions"]["au-llm"][0] for r in again} == \
        {r["image_id"]: t for r, t in zip(records[:7], texts)}
    # K=1 reuses the variant-0 answers: the cache key of variant 0 has not changed
    base = ClientConfig(model="m")
    params = base.request_params({"temperature": 1.0}, 0)
    assert cache_key("m", [], params) == cache_key("m", [], params, 0)
    assert cache_key("m", [], params, 1) != cache_key("m", [], params)
    assert base.request_params({}, 0, 2)["seed"] == 2000


def test_variants_flag_and_bad_values(server, tmp_path, capsys):
    save_records(same_au_set(4), tmp_path / "r.json")
    code = main(["synthesize", "--kind", "au-llm", "--ann", str(tmp_path / "r.json"),
                 "--out", str(tmp_path / "o.json"), "--base-url", server.base_url,
                 "--variants", "2", "--dry-run", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "variants K=2: 4 records, 1 distinct prompts, 2 requests" in out
    with pytest.raises(ValueError, match="variants must be an integer >= 1"):
        ClientConfig(variants=0)
