"""F1 / accuracy helpers against scikit-learn's definitions."""
import numpy as np
import pytest

from lavis_ext.metrics.classification import (accuracy, f1_from_counts, macro_f1, mean_defined,
                                              multilabel_f1)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_multilabel_f1_matches_sklearn_with_a_mask():
    rng = np.random.default_rng(0)
    y = rng.random((200, 5)) < 0.3
    p = rng.random((200, 5)) < 0.4
    mask = rng.random((200, 5)) < 0.8
    got = multilabel_f1(y, p, mask)
    for c in range(5):
        m = mask[:, c]
        assert got[c] == pytest.approx(sklearn_metrics.f1_score(y[m, c], p[m, c]))


def test_accuracy_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    assert accuracy(y, p) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    assert macro_f1(y, p, 4) == pytest.approx(sklearn_metrics.f1_score(y, p, average="macro"))


def test_undefined_f1_is_none_and_left_out():
    assert f1_from_counts(0, 0, 0) is None
    assert f1_from_counts(0, 3, 0) == 0.0
    assert mean_defined([None, 0.5, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="non-empty"):
        accuracy([], [])
