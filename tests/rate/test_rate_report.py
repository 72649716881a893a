"""`expblip rate --report` on a fixture small enough to compute by hand.

Two models (A, B), two items (x, y), two raters:

    rater  x:A x:B y:A y:B   most complete
    r1      8   6   7   5    x: A, y: A
    r2      6   6   9   3    x: B, y: A

Correctness, item means: A 7 (x), 8 (y) -> mean 7.5, sd sqrt(0.5), 95% CI half-width
t(0.975, 1) * sd / sqrt(2) = 12.7062 * 0.5 = 6.3531. B 6, 4 -> mean 5, sd sqrt(2), half-width
12.7062. Most complete: 4 picks, A 3 (75%), B 1 (25%).

Krippendorff's alpha, interval, units (x,A) [8, 6], (x,B) [6, 6], (y,A) [7, 9], (y,B) [5, 3]:
observed D_o = sum over units of the ordered pairs' squared differences / (m_u - 1), over n = 8
values: (8 + 0 + 8 + 8) / 8 = 3; expected D_e = all ordered pairs of the 8 values:
2 * n * sum((v - 6.25)^2) / (n (n - 1)) = 2 * 8 * 23.5 / 56 = 376 / 56; alpha = 1 - 3 * 56 / 376
= 208 / 376 = 0.553191. Nominal on the picks, units x [A, B], y [A, A]: D_o = 2 / 4 = 0.5,
D_e = 2 * 3 * 1 / (4 * 3) = 0.5, alpha = 0.
"""
import sqlite3

import pytest

from lavis_ext.cli import main
from lavis_ext.rate.kit import Item
from lavis_ext.rate.report import format_report, report, summarize
from lavis_ext.rate.store import Rating, RatingStore

TABLE = {("r1", "x"): ((8, 6), "A"), ("r1", "y"): ((7, 5), "A"),
         ("r2", "x"): ((6, 6), "B"), ("r2", "y"): ((9, 3), "A")}


def hand_ratings():
    return [Rating(rater, item, model, score, model == pick)
            for (rater, item), (scores, pick) in TABLE.items()
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
    assert summary["alpha_correctness_interval"] == pytest.approx(208 / 376)
    assert summary["alpha_most_complete_nominal"] == pytest.approx(0.0, abs=1e-12)
    assert (summary["raters"], summary["ratings"], summary["most_complete_picks"]) == (2, 8, 4)
    text = format_report(summary)
    assert "7.50" in text and "1.15-13.85" in text and "3 (75.00%)" in text
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
    for (rater, item), (scores, pick) in TABLE.items():
        for model, score in zip("AB", scores):
            store.rate(rater, ids[item], captions[(ids[item], model)], score, model == pick)
    stored, by_hand = report(store), summarize(hand_ratings(), ["A", "B"], ["x", "y"])
    assert stored["models"] == by_hand["models"]
    assert stored["alpha_correctness_interval"] == pytest.approx(208 / 376)
    assert main(["rate", "--report", "--out", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 ratings by 2 raters on 2 of 2 items; 4 most-complete picks")
    assert "1.15-13.85" in out and "0.553" in out
