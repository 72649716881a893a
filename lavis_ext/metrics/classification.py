"""F1 and accuracy for AU detection and emotion classification, in plain numpy.

Kept small and dependency-free so the probe task, the recognition score and tests agree on
one definition: F1 of a label with no true positive is 0; a label with no positive ground
truth and no positive prediction has no F1 (None) and is left out of averages.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def binary_counts(y_true: Sequence[bool], y_pred: Sequence[bool]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of one binary label."""
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: labels {t.shape} vs predictions {p.shape}")
    return int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())


def f1_from_counts(tp: int, fp: int, fn: int) -> float | None:
    """F1 = 2TP / (2TP + FP + FN); None when the label never occurs on either side."""
    denominator = 2 * tp + fp + fn
    return None if denominator == 0 else 2 * tp / denominator


def multilabel_f1(y_true: np.ndarray, y_pred: np.ndarray,
                  mask: np.ndarray | None = None) -> list[float | None]:
    """Per-column F1 of [N, C] binary arrays; ``mask`` marks the coded entries (null = False)."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"expected two [N, C] arrays, got {y_true.shape} and {y_pred.shape}")
    mask = np.ones_like(y_true) if mask is None else np.asarray(mask).astype(bool)
    scores = []
    for c in range(y_true.shape[1]):
        m = mask[:, c]
        scores.append(f1_from_counts(*binary_counts(y_true[m, c], y_pred[m, c])))
    return scores


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"accuracy needs two equal, non-empty arrays, got {t.shape}, {p.shape}")
    return float((t == p).mean())


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float | None:
    """Unweighted mean over classes of one-vs-rest F1 (classes absent on both sides skipped)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return mean_defined([f1_from_counts(*binary_counts(t == c, p == c))
                         for c in range(num_classes)])
