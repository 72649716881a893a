"""``expblip rate --report``: Table 5 from a ratings file.

- Correctness per model: each item's score is the mean of its raters' ratings, the model's
  score the mean over items, and the 95% CI Student's t over items (items are the sampled
  unit; with every rater on every item this mean equals the mean of all ratings).
- Most and least complete, as the paper reports them (most complete: Mix 3.43%, Cat 28.85%,
  Exp 67.72%): of all the (rater, item) pairs with a most (least) complete pick, the count
  and share in which each model's caption was picked.
- Agreement: Krippendorff's alpha (the ``krippendorff`` package) on correctness at the
  interval level (units: item x model) and on each pick at the nominal level (units: items).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

from lavis_ext.rate.store import Rating, RatingStore

LABELS = ("most", "least")


def _mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t interval (None with fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def _alpha(matrix: list[list[float]], level: str) -> float | None:
    """Krippendorff's alpha, or None when no unit has two ratings or all values agree
    trivially (one value overall: alpha is undefined)."""
    import numpy as np

    data = np.array(matrix, dtype=float)
    paired = (~np.isnan(data)).sum(axis=0) >= 2
    if not paired.any() or len(np.unique(data[:, paired][~np.isnan(data[:, paired])])) < 2:
        return None
    import krippendorff

    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


def summarize(ratings: Sequence[Rating], models: Sequence[str],
              items: Sequence[str]) -> dict[str, Any]:
    """The report's numbers as a JSON-ready dict (see the module docstring)."""
    by_unit: dict[tuple[str, str], list[int]] = defaultdict(list)
    picks: dict[str, dict[tuple[str, str], str]] = {label: {} for label in LABELS}
    for r in ratings:
        by_unit[(r.item, r.model)].append(r.correctness)
        if r.complete in picks:
            picks[r.complete][(r.rater, r.item)] = r.model
    per_model: dict[str, Any] = {}
    for model in models:
        scores = [sum(v) / len(v) for (item, m), v in sorted(by_unit.items()) if m == model]
        n_ratings = sum(len(v) for (item, m), v in by_unit.items() if m == model)
        mean, half = _mean_ci(scores) if scores else (None, None)
        per_model[model] = {
            "correctness_mean": mean, "ci95_half_width": half,
            "ci95": None if half is None else [mean - half, mean + half],
            "n_items": len(scores), "n_ratings": n_ratings}
        for label, chosen_by in picks.items():
            chosen = sum(1 for m in chosen_by.values() if m == model)
            per_model[model][f"{label}_complete_count"] = chosen
            per_model[model][f"{label}_complete_share"] = (chosen / len(chosen_by)
                                                           if chosen_by else None)
    raters = sorted({r.rater for r in ratings})
    units = [(item, model) for item in items for model in models]
    column = {unit: j for j, unit in enumerate(units)}
    scores = [[math.nan] * len(units) for _ in raters]
    row = {rater: i for i, rater in enumerate(raters)}
    item_col = {item: j for j, item in enumerate(items)}
    for r in ratings:
        scores[row[r.rater]][column[(r.item, r.model)]] = r.correctness
    summary = {"models": per_model, "raters": len(raters), "ratings": len(ratings),
               "items_rated": len({r.item for r in ratings}), "items": len(items),
               "alpha_correctness_interval": _alpha(scores, "interval") if raters else None}
    for label, chosen_by in picks.items():
        matrix = [[math.nan] * len(items) for _ in raters]
        for (rater, item), model in chosen_by.items():
            matrix[row[rater]][item_col[item]] = models.index(model)
        summary[f"{label}_complete_picks"] = len(chosen_by)
        summary[f"alpha_{label}_complete_nominal"] = _alpha(matrix, "nominal") if raters else None
    return summary


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_report(summary: dict[str, Any]) -> str:
    """The summary as the console table (shares as percentages, as the paper gives them)."""
    lines = [f"{summary['ratings']} ratings by {summary['raters']} raters on "
             f"{summary['items_rated']} of {summary['items']} items; "
             f"{summary['most_complete_picks']} most- and {summary['least_complete_picks']} "
             "least-complete picks", "",
             f"{'model':<20} {'correctness':>11} {'95% CI':>15} {'items':>6} {'ratings':>8} "
             f"{'most complete':>18} {'least complete':>18}"]
    for model, row in summary["models"].items():
        ci = "n/a" if row["ci95"] is None else f"{row['ci95'][0]:.2f}-{row['ci95'][1]:.2f}"
        picked = []
        for label in LABELS:
            share = row[f"{label}_complete_share"]
            picked.append(f"{row[f'{label}_complete_count']} "
                          f"({'n/a' if share is None else f'{share:.2%}'})")
        lines.append(f"{model:<20} {_num(row['correctness_mean']):>11} {ci:>15} "
                     f"{row['n_items']:>6} {row['n_ratings']:>8} {picked[0]:>18} "
                     f"{picked[1]:>18}")
    lines += ["", "Krippendorff's alpha: correctness (interval) "
              f"{_num(summary['alpha_correctness_interval'], 3)}; most-complete pick (nominal) "
              f"{_num(summary['alpha_most_complete_nominal'], 3)}; least-complete pick "
              f"(nominal) {_num(summary['alpha_least_complete_nominal'], 3)}",
              "(n/a: no unit rated by two raters yet, or no variation to measure)"]
    return "\n".join(lines)


def report(store: RatingStore) -> dict[str, Any]:
    """``summarize`` over everything in a ratings file."""
    return summarize(store.ratings(), store.models(), store.item_ids())
