"""Probe scores and the paper's Table 3/4 layout: JSON, CSV, markdown, a per-AU bar chart.

Several runs (one per feature source or model) fill one table: each run replaces its own row,
named by ``row_name``, in ``probe_{target}_{dataset}_{split}.csv`` / ``.md``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lavis_ext.errors import InputError
from lavis_ext.io import atomic_write_bytes, atomic_write_text
from lavis_ext.metrics.classification import accuracy, macro_f1, mean_defined, multilabel_f1


def score(target: str, names: Sequence[Any], logits: np.ndarray, targets: np.ndarray,
          masks: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Per-AU F1 (sigmoid >= threshold) and their average, or accuracy and macro-F1."""
    if len(logits) == 0:
        raise InputError(f"no evaluated image has a usable {target} label")
    if target == "au":
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        per = multilabel_f1(targets, probabilities >= threshold, masks)
        average = mean_defined(per)
        return {"au_f1": {str(a): f for a, f in zip(names, per)}, "au_f1_avg": average,
                "agg_metrics": float(average or 0.0), "n_scored": int(len(logits))}
    predicted = logits.argmax(axis=1)
    acc = accuracy(targets, predicted)
    return {"accuracy": acc, "macro_f1": macro_f1(targets, predicted, len(names)),
            "agg_metrics": acc, "n_scored": int(len(logits))}


def _columns(report: Mapping[str, Any]) -> tuple[list[str], list[float | None]]:
    if report["target"] == "au":
        names = report["classes"]
        return ([f"AU{a}" for a in names] + ["Avg."],
                [report["au_f1"][str(a)] for a in names] + [report["au_f1_avg"]])
    return ["Accuracy", "Macro-F1"], [report["accuracy"], report["macro_f1"]]


def write_tables(report: Mapping[str, Any], table_dir: str | Path) -> Path:
    """Upsert the report's row into the CSV and markdown tables (and draw the AU chart)."""
    table_dir = Path(table_dir)
    stem = table_dir / f"probe_{report['target']}_{report['dataset']}_{report['split']}"
    columns, values = _columns(report)
    cells = ["" if v is None else f"{100 * v:.1f}" for v in values]
    rows: dict[str, list[str]] = {}
    csv_path = stem.with_suffix(".csv")
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            if next(reader, None) == ["Features", *columns]:  # another class list: start over
                rows = {row[0]: row[1:] for row in reader if row}
    rows[report["row"]] = cells
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Features", *columns])
    for name, row in rows.items():
        writer.writerow([name, *row])
    atomic_write_text(csv_path, out.getvalue())
    kind = "AU detection F1" if report["target"] == "au" else "Emotion classification"
    md = [f"**{kind} (%), {report['dataset']} {report['split']}, probe: {report['mode']}**", "",
          "| Features | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    md += [f"| {name} | " + " | ".join(c or "-" for c in row) + " |" for name, row in rows.items()]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    if report["target"] == "au":
        bar_chart(report, stem.with_suffix(".png"))
    return stem


def bar_chart(report: Mapping[str, Any], path: Path) -> None:
    """Per-AU F1 bars with the average as a dashed line (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"AU{a}" for a in report["classes"]]
    values = [100 * (report["au_f1"][str(a)] or 0.0) for a in report["classes"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.2), dpi=120)
    ax.bar(names, values, color="#4C72B0")
    if report["au_f1_avg"] is not None:
        ax.axhline(100 * report["au_f1_avg"], color="#C44E52", linestyle="--",
                   label=f"average {100 * report['au_f1_avg']:.1f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("F1 (%)")
    ax.set_title(f"{report['row']}: {report['dataset']} {report['split']}", fontsize=9)
    ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
