"""`expblip rate --report` on a fixture small enough to compute by hand.

Two models (A, B), two items (x, y), two raters:

    rater  x:A x:B y:A y:B   most complete   least complete
    r1      8   6   7   5    x: A, y: A      x: B, y: B
    r2      6   6   9   3    x: B, y: A      x: A, y: none

Correctness, item means: A 7 (x), 8 (y) -> mean 7.5, sd sqrt(0.5), 95% CI half-width
t(0.975, 1) * sd / sqrt(2) = 12.7062 * 0.5 = 6.3531. B 6, 4 -> mean 5, sd sqrt(2), half-width
12.7062. Most complete: 4 picks, A 3 (75%), B 1 (25%). Least complete: 3 picks, A 1 (1/3),
B 2 (2/3).

Krippendorff's alpha, interval, units (x,A) [8, 6], (x,B) [6, 6], (y,A) [7, 9], (y,B) [5, 3]:
observed D_o = sum over units of the ordered pairs' squared differences / (m_u - 1), over n = 8
values: (8 + 0 + 8 + 8) / 8 = 3; expected D_e = all ordered pairs of the 8 values:
2 * n * sum((v - 6.25)^2) / (n (n - 1)) = 2 * 8 * 23.5 / 56 = 376 / 56; alpha = 1 - 3 * 56 / 376
= 208 / 376 = 0.553191. Nominal on the picks, units x [A, B], y [A, A]: D_o = 2 / 4 = 0.5,
D_e = 2 * 3 * 1 / (4 * 3) = 0.5, alpha = 0. Least: only x is pairable, [B, A]: D_o = 2 / 2 = 1,
D_e = 2 / (2 * 1) = 1, alpha = 0.
"""
import sqlite3

import pytest

from lavis_ext.cli import main
from lavis_ext.rate.kit import Item
from lavis_ext.rate.report import format_report, report, summarize
from lavis_ext.rate.store import Rating, RatingStore

TABLE = {("r1", "x"): ((8, 6), "A", "B"), ("r1", "y"): ((7, 5), "A", "B"),
         ("r2", "x"): ((6, 6), "B", "A"), ("r2", "y"): ((9, 3), "A", None)}


def label(model, most, least):
    return "most" if model == most else "least" if model == least else None


def hand_ratings():
    return [Rating(rater, item, model, score, label(model, most, least))
            for (rater, item), (scores, most, least) in TABLE.items()
            for model, score in zip("AB", scores)]


def test_numbers_match_the_hand_computation():
    summary = summarize(hand_ratings(), ["A", "B"], ["x", "y"])
    a, b = summary["models"]["A"], summary["models"]["B"]
    assert a["correctness_mean"] == pytest.approx(7.5)
    assert a["ci95_half_width"] == pytest.approx(6.3531, abs=1e-4)
    assert a["ci95"] == pytest.approx([7.5 - 6.3531, 7.5 + 6.3531], abs=1e-4)
    assert b["correctness_mean"] == pytest.approx(5.0)
    assert b["ci95_half_width"] == pytest.approx(12.7062, abs=1e-4)
    assert (a["n_items"], a["n_ratings"]) == (2, 4)
    assert (a["most_complete_count"], b["most_complete_count"]) == (3, 1)
    assert (a["most_complete_share"], b["most_complete_share"]) == (0.75, 0.25)
    assert (a["least_complete_count"], b["least_complete_count"]) == (1, 2)
    assert b["least_complete_share"] == pytest.approx(2 / 3)
    assert summary["least_complete_picks"] == 3
    assert summary["alpha_least_complete_nominal"] == pytest.approx(0.0, abs=1e-12)
    assert summary["alpha_correctness_interval"] == pytest.approx(208 / 376)
    assert summary["alpha_most_complete_nominal"] == pytest.approx(0.0, abs=1e-12)
    assert (summary["raters"], summary["ratings"], summary["most_complete_picks"]) == (2, 8, 4)
    text = format_report(summary)
    assert "7.50" in text and "1.15-13.85" in text and "3 (75.00%)" in text
    assert "2 (66.67%)" in text
    assert "0.553" in text


def test_alpha_needs_two_raters_on_a_unit():
    one = [r for r in hand_ratings() if r.rater == "r1"]
    summary = summarize(one, ["A", "B"], ["x", "y"])
    assert summary["alpha_correctness_interval"] is None
    assert summary["models"]["A"]["correctness_mean"] == 7.5
    assert summarize([], ["A", "B"], ["x", "y"])["models"]["A"]["correctness_mean"] is None


def test_report_command_reads_the_ratings_file(tmp_path, capsys):
    store = RatingStore(tmp_path / "r.sqlite")
    store.create([Item("x", "d", "/x.png", {"A": "a x", "B": "b x"}),
                  Item("y", "d", "/y.png", {"A": "a y", "B": "b y"})], ["A", "B"], "test")
    ids = dict(zip("xy", store.item_ids()))
    with sqlite3.connect(store.path) as conn:
        captions = {(item, model): caption for caption, item, model in
                    conn.execute("SELECT caption, item, model FROM captions")}
    for (rater, item), (scores, most, least) in TABLE.items():
        for model, score in zip("AB", scores):
            store.rate(rater, ids[item], captions[(ids[item], model)], score,
                       label(model, most, least))
    stored, by_hand = report(store), summarize(hand_ratings(), ["A", "B"], ["x", "y"])
    assert stored["models"] == by_hand["models"]
    assert stored["alpha_correctness_interval"] == pytest.approx(208 / 376)
    assert main(["rate", "--report", "--out", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 ratings by 2 raters on 2 of 2 items; 4 most- and 3 "
                          "least-complete picks")
    assert "1.15-13.85" in out and "0.553" in out


def test_the_kit_and_the_report_run_without_torch_lavis_or_transformers(tmp_path):
    # A fresh process where the heavy modules cannot be imported: build a kit, rate, report.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import sys
for name in ("torch", "lavis", "transformers"):
    sys.modules[name] = None
from lavis_ext.rate.app import create_app
from lavis_ext.rate.kit import Item
from lavis_ext.rate.store import RatingStore
from lavis_ext.cli import main
store = RatingStore({str(tmp_path / 'r.sqlite')!r})
store.create([Item("x", "d", "/x.png", {{"A": "a", "B": "b"}})], ["A", "B"], "test")
create_app(store)
for rater, score in (("r1", 3), ("r2", 5)):
    item = store.next_item(rater)["item"]
    for caption in item["captions"]:
        store.rate(rater, item["item"], caption["caption"], score, None)
sys.exit(main(["rate", "--report", "--out", store.path.as_posix()]))
"""
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("4 ratings by 2 raters on 1 of 1 items")
