"""Caption metrics with the paper's multi-reference rule: score each reference, keep the best.

- METEOR: pycocoevalcap's METEOR 1.5 jar (Java). One ``MeteorScorer`` process serves a whole
  evaluation (the JVM takes seconds to start); use it as a context manager so it is closed.
- ROUGE-L: the LCS F-measure with beta = 1.2 as defined by the COCO caption toolkit
  (pycocoevalcap), applied to one reference at a time. ``rouge_l(..., beta=1)`` gives the
  plain F1 that the ``rouge-score`` package reports.
- Embedding similarity: cosine of sentence embeddings (see ``embeddings.py``).

Two protocols (``PROTOCOLS``):

- ``coco`` (default; what LAVIS's caption evaluation, and so the official Exp-BLIP code,
  runs): pycocoevalcap's pipeline as is. Texts go through its PTB tokenizer (Stanford
  CoreNLP, lowercased, punctuation tokens dropped); METEOR is the jar's multi-reference
  score (each segment against all references, the best one counts), reported as the jar's
  corpus-level aggregate; ROUGE-L is pycocoevalcap's ``Rouge`` (best precision and best
  recall over references, beta 1.2), averaged over images. Needs Java.
- ``best``: every reference scored on its own and the best kept, means over images; texts
  normalised by a regular expression (lowercase, punctuation removed), no tokenizer JVM.
"""
from __future__ import annotations

import re
import shutil
from typing import Any, Mapping, Sequence

import numpy as np

from lavis_ext.metrics.embeddings import TextEncoder

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
PROTOCOLS = ("coco", "best")


def normalize_caption(text: str) -> str:
    return " ".join(_WORD.findall((text or "").lower()))


def _require_java(what: str) -> None:
    if shutil.which("java") is None:
        raise RuntimeError(f"{what} needs Java on PATH (pycocoevalcap runs a jar); install a "
                           f"JRE, or score with protocol 'best' and METEOR disabled")


def check_protocol(protocol: str, where: str = "protocol") -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where}: expected one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """The COCO toolkit's tokenization of each text (one CoreNLP process for all of them).

    Texts are sent once each; blank texts are not sent (the tokenizer works line by line)
    and come back empty.
    """
    cleaned = [" ".join((t or "").split()) for t in texts]
    unique = sorted({t for t in cleaned if t})
    if not unique:
        return ["" for _ in cleaned]
    _require_java("the PTB tokenizer")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({str(i): [{"caption": t}]
                                         for i, t in enumerate(unique)})
    table = {t: tokenized[str(i)][0] for i, t in enumerate(unique)}
    return [table[t] if t else "" for t in cleaned]


def coco_rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]
                 ) -> tuple[float, list[float]]:
    """pycocoevalcap's ROUGE-L over tokenized texts: (mean, per-image scores)."""
    from pycocoevalcap.rouge.rouge import Rouge

    if not hypotheses:
        return 0.0, []
    keys = [str(i) for i in range(len(hypotheses))]
    mean, scores = Rouge().compute_score({k: list(r) for k, r in zip(keys, references)},
                                         {k: [h] for k, h in zip(keys, hypotheses)})
    return float(mean), [float(s) for s in scores]


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
            _require_java("METEOR")
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

    def score_multi(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
                    ) -> tuple[float, list[float]]:
        """pycocoevalcap's METEOR with all references per segment: (the jar's corpus-level
        score, per-segment scores), as COCO's caption evaluation reports it."""
        if len(hypotheses) != len(references):
            raise ValueError("score_multi needs one reference list per hypothesis")
        if not hypotheses:
            return 0.0, []
        keys = [str(i) for i in range(len(hypotheses))]
        score, scores = self._meteor.compute_score(
            {k: list(r) for k, r in zip(keys, references)},
            {k: [h] for k, h in zip(keys, hypotheses)})
        return float(score), [float(s) for s in scores]

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


def _best_similarity(raw_h: Sequence[str], raw_r: Sequence[str], owners: Sequence[int], n: int,
                     encoder: TextEncoder) -> list[float]:
    """Best cosine over each sample's references; an empty hypothesis scores 0."""
    texts = sorted(set(raw_h) | set(raw_r))
    vectors = encoder.encode(texts)
    row = {t: v for t, v in zip(texts, vectors)}
    sims = [float(np.dot(row[h], row[r])) if h.strip() else 0.0 for h, r in zip(raw_h, raw_r)]
    return _max_per_sample(sims, owners, n)


def _kept_references(references: Sequence[Sequence[str]]) -> list[list[str]]:
    kept = []
    for i, refs in enumerate(references):
        texts = [r for r in refs if normalize_caption(r)]
        if not texts:
            raise ValueError(f"sample {i} has no non-empty reference caption")
        kept.append(texts)
    return kept


def score_captions_coco(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                        meteor: MeteorScorer | None = None, encoder: TextEncoder | None = None,
                        groups: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """COCO caption evaluation (PTB tokenizer, METEOR, ROUGE-L) plus best embedding cosine.

    ``groups`` names subsets of sample positions (e.g. one per dataset); each gets its own
    means in ``group_mean``, METEOR being the jar's corpus score over that subset alone, as
    if the subset had been evaluated by itself.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    kept = _kept_references(references)
    n = len(predictions)
    flat = [r for refs in kept for r in refs]
    tokens = ptb_tokenize([p or "" for p in predictions] + flat)
    hyps, rest = tokens[:n], tokens[n:]
    refs_tok: list[list[str]] = []
    for refs in kept:
        refs_tok.append(rest[:len(refs)])
        rest = rest[len(refs):]
    per_sample: dict[str, list[float]] = {}
    mean: dict[str, float | None] = {}
    rouge_mean, per_sample["rouge_l"] = coco_rouge_l(hyps, refs_tok)
    mean["rouge_l"] = rouge_mean
    corpus: dict[str, float] = {}
    if meteor is not None:
        mean["meteor"], per_sample["meteor"] = meteor.score_multi(hyps, refs_tok)
        for name, positions in (groups or {}).items():
            corpus[name] = meteor.score_multi([hyps[i] for i in positions],
                                              [refs_tok[i] for i in positions])[0]
    if encoder is not None:
        owners = [i for i, refs in enumerate(kept) for _ in refs]
        raw_h = [predictions[i] or "" for i in owners]
        per_sample["embedding_sim"] = _best_similarity(raw_h, flat, owners, n, encoder)
        mean["embedding_sim"] = float(np.mean(per_sample["embedding_sim"])) if n else None
    group_mean = {}
    for name, positions in (groups or {}).items():
        values = {metric: float(np.mean([scores[i] for i in positions])) if positions else None
                  for metric, scores in per_sample.items()}
        if name in corpus:
            values["meteor"] = corpus[name] if positions else None
        group_mean[name] = values
    return {"per_sample": per_sample, "mean": mean, "group_mean": group_mean,
            "n_empty_predictions": sum(1 for h in predictions if not normalize_caption(h))}


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                   meteor: MeteorScorer | None = None, encoder: TextEncoder | None = None,
                   rouge_beta: float = 1.2,
                   groups: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Per-sample best-over-references METEOR, ROUGE-L and embedding similarity, and means.

    Every sample must have at least one non-empty reference (the caller counts and drops
    those that do not). An empty prediction scores 0 on every metric. Metrics whose scorer is
    None are left out. ``groups`` (name -> sample positions) adds ``group_mean``.
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
        per_sample["embedding_sim"] = _best_similarity(raw_h, raw_r, owners, n, encoder)
    for values in per_sample.values():
        for i in range(n):
            if empty[i]:
                values[i] = 0.0
    means = {name: float(np.mean(values)) if values else None
             for name, values in per_sample.items()}
    group_mean = {group: {name: float(np.mean([values[i] for i in positions]))
                          if positions else None for name, values in per_sample.items()}
                  for group, positions in (groups or {}).items()}
    return {"per_sample": per_sample, "mean": means, "group_mean": group_mean,
            "n_empty_predictions": sum(empty)}
