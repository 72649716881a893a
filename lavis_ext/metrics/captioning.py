"""Caption metrics with the paper's multi-reference rule: score each reference, keep the best.

- METEOR: pycocoevalcap's METEOR 1.5 jar (Java). One ``MeteorScorer`` process serves a whole
  evaluation (the JVM takes seconds to start); use it as a context manager so it is closed.
- ROUGE-L: the LCS F-measure with beta = 1.2 as defined by the COCO caption toolkit
  (pycocoevalcap), applied to one reference at a time. ``rouge_l(..., beta=1)`` gives the
  plain F1 that the ``rouge-score`` package reports.
- Embedding similarity: cosine of sentence embeddings (see ``embeddings.py``).

Texts are normalised first (lowercase, punctuation removed, whitespace collapsed), which is
what the COCO toolkit's PTB tokenizer does to these captions, without a second JVM.
"""
from __future__ import annotations

import re
import shutil
from typing import Any, Sequence

import numpy as np

from lavis_ext.metrics.embeddings import TextEncoder

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def normalize_caption(text: str) -> str:
    return " ".join(_WORD.findall((text or "").lower()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str, beta: float = 1.2) -> float:
    """LCS-based F-measure of one normalised candidate against one reference."""
    c, r = candidate.split(), reference.split()
    if not c or not r:
        return 0.0
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


class MeteorScorer:
    """One METEOR 1.5 (Java) process; score many (hypothesis, reference) pairs at once."""

    def __init__(self, meteor: Any = None) -> None:
        """Start a METEOR process, or adopt a running ``pycocoevalcap`` ``Meteor`` (then
        ``close`` ends that one)."""
        if meteor is None:
            if shutil.which("java") is None:
                raise RuntimeError("METEOR needs Java on PATH (pycocoevalcap runs "
                                   "meteor-1.5.jar); install a JRE or evaluate with meteor "
                                   "disabled")
            from pycocoevalcap.meteor.meteor import Meteor

            meteor = Meteor()
        self._meteor = meteor

    def score_pairs(self, hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(hypotheses) != len(references):
            raise ValueError("score_pairs needs as many references as hypotheses")
        if not hypotheses:
            return []
        keys = [str(i) for i in range(len(hypotheses))]
        gts = {k: [r] for k, r in zip(keys, references)}
        res = {k: [h] for k, h in zip(keys, hypotheses)}
        _, scores = self._meteor.compute_score(gts, res)
        return [float(s) for s in scores]

    def close(self) -> None:
        meteor = getattr(self, "_meteor", None)
        if meteor is None:
            return
        process = meteor.meteor_p
        with meteor.lock:
            if process.stdin and not process.stdin.closed:
                process.stdin.close()
            if process.poll() is None:
                process.kill()
            process.wait()
        # pycocoevalcap's own __del__ repeats these steps later; on a reaped process they
        # do nothing.
        self._meteor = None

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _max_per_sample(values: Sequence[float], owners: Sequence[int], n: int) -> list[float]:
    best = [0.0] * n
    seen = [False] * n
    for value, owner in zip(values, owners):
        if not seen[owner] or value > best[owner]:
            best[owner], seen[owner] = value, True
    return best


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                   meteor: MeteorScorer | None = None, encoder: TextEncoder | None = None,
                   rouge_beta: float = 1.2) -> dict[str, Any]:
    """Per-sample best-over-references METEOR, ROUGE-L and embedding similarity, and means.

    Every sample must have at least one non-empty reference (the caller counts and drops
    those that do not). An empty prediction scores 0 on every metric. Metrics whose scorer is
    None are left out.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    hyps = [normalize_caption(p) for p in predictions]
    pairs_h: list[str] = []
    pairs_r: list[str] = []
    owners: list[int] = []
    raw_h: list[str] = []
    raw_r: list[str] = []
    for i, (hyp, refs) in enumerate(zip(hyps, references)):
        kept = [r for r in refs if normalize_caption(r)]
        if not kept:
            raise ValueError(f"sample {i} has no non-empty reference caption")
        for ref in kept:
            pairs_h.append(hyp)
            pairs_r.append(normalize_caption(ref))
            raw_h.append(predictions[i] or "")
            raw_r.append(ref)
            owners.append(i)
    n = len(hyps)
    empty = [not h for h in hyps]
    per_sample: dict[str, list[float]] = {}
    per_sample["rouge_l"] = _max_per_sample(
        [rouge_l(h, r, rouge_beta) for h, r in zip(pairs_h, pairs_r)], owners, n)
    if meteor is not None:
        live = [k for k, h in enumerate(pairs_h) if h]
        scores = meteor.score_pairs([pairs_h[k] for k in live], [pairs_r[k] for k in live])
        pair_scores = [0.0] * len(pairs_h)
        for k, s in zip(live, scores):
            pair_scores[k] = s
        per_sample["meteor"] = _max_per_sample(pair_scores, owners, n)
    if encoder is not None:
        texts = sorted(set(raw_h) | set(raw_r))
        vectors = encoder.encode(texts)
        row = {t: v for t, v in zip(texts, vectors)}
        sims = [float(np.dot(row[h], row[r])) if h.strip() else 0.0
                for h, r in zip(raw_h, raw_r)]
        per_sample["embedding_sim"] = _max_per_sample(sims, owners, n)
    for values in per_sample.values():
        for i in range(n):
            if empty[i]:
                values[i] = 0.0
    means = {name: float(np.mean(values)) if values else None
             for name, values in per_sample.items()}
    return {"per_sample": per_sample, "mean": means, "n_empty_predictions": sum(empty)}
