"""Caption metrics for the paper's Table 2: METEOR, ROUGE-L (pycocoevalcap) and embedding cosine.

- METEOR: pycocoevalcap's METEOR 1.5 jar (Java). One ``MeteorScorer`` process serves a whole
  evaluation (the JVM takes seconds to start); use it as a context manager so it is closed.
- ROUGE-L: pycocoevalcap's ``Rouge`` (LCS F-measure, beta 1.2).
- Embedding similarity: cosine of sentence embeddings (see ``embeddings.py``), best reference.

Both protocols (``PROTOCOLS``) tokenize with pycocoevalcap's PTB tokenizer (Stanford CoreNLP,
lowercased, punctuation tokens dropped), so both need Java:

- ``best`` (default; the paper's §4.1: "computed the metrics between the predicted caption and
  each ground truth, and then chose the highest score"): every reference is scored on its own,
  as pycocoevalcap scores a one-reference image, the highest score of each image is kept, and
  images are averaged (METEOR too: the mean of per-image maxima, not the jar's corpus score).
- ``coco`` (COCO's caption evaluation, what LAVIS's ``captioning`` task runs on COCO): METEOR
  is the jar's multi-reference score reported as its corpus-level aggregate; ROUGE-L takes the
  best precision and the best recall over the references apart, averaged over images.
"""
from __future__ import annotations

import re
import shutil
from typing import Any, Mapping, Sequence

import numpy as np

from lavis_ext.errors import InputError
from lavis_ext.metrics.embeddings import TextEncoder

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
PROTOCOLS = ("best", "coco", "facial-r1")
DEFAULT_PROTOCOL = "best"


def normalize_caption(text: str) -> str:
    """Lowercased words only: decides whether a caption or reference is empty."""
    return " ".join(_WORD.findall((text or "").lower()))


def _require_java(what: str) -> None:
    if shutil.which("java") is None:
        raise RuntimeError(f"{what} needs Java on PATH (pycocoevalcap runs a jar); install a "
                           f"JRE (17 works)")


def check_protocol(protocol: str, where: str = "protocol") -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"{where}: expected one of {PROTOCOLS}, got {protocol!r}")
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
            raise InputError(f"sample {i} has no non-empty reference caption")
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
    hyps, refs_tok = _tokenized(predictions, kept)
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


def _tokenized(predictions: Sequence[str], kept: Sequence[Sequence[str]]
               ) -> tuple[list[str], list[list[str]]]:
    """PTB tokens of the predictions and of each sample's references (one tokenizer run)."""
    n = len(predictions)
    tokens = ptb_tokenize([p or "" for p in predictions] + [r for refs in kept for r in refs])
    hyps, rest = tokens[:n], tokens[n:]
    refs_tok: list[list[str]] = []
    for refs in kept:
        refs_tok.append(rest[:len(refs)])
        rest = rest[len(refs):]
    return hyps, refs_tok


def rouge_score_l(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """``rouge_score``'s ROUGE-L F-measure (stemmed) of each (hypothesis, reference) pair."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [float(scorer.score(r or "", h or "")["rougeL"].fmeasure)
            for h, r in zip(hypotheses, references)]


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]], *,
                   meteor: MeteorScorer | None = None, encoder: TextEncoder | None = None,
                   groups: Mapping[str, Sequence[int]] | None = None,
                   rouge: str = "coco") -> dict[str, Any]:
    """The paper's protocol: each sample's best single-reference METEOR, ROUGE-L and embedding
    similarity, and their means over samples (``mean``; per group in ``group_mean``).

    A single-reference score is what pycocoevalcap gives an image with that one reference
    (PTB tokens, ``Meteor`` segment score, ``Rouge``). Every sample must have at least one
    non-empty reference (the caller counts and drops those that do not). Metrics whose scorer
    is None are left out. ``groups`` names subsets of sample positions (e.g. one per dataset).
    ``rouge``: ``coco`` (pycocoevalcap's, on PTB tokens) or ``rouge_score`` (Facial-R1's, on
    the raw texts; then only METEOR needs the PTB tokenizer).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if rouge not in ("coco", "rouge_score"):
        raise ValueError(f"rouge: expected coco or rouge_score, got {rouge!r}")
    kept = _kept_references(references)
    n = len(predictions)
    owners = [i for i, refs in enumerate(kept) for _ in refs]
    per_sample: dict[str, list[float]] = {}
    if rouge == "rouge_score":
        per_sample["rouge_l"] = _max_per_sample(
            rouge_score_l([predictions[i] for i in owners], [r for refs in kept for r in refs]),
            owners, n)
    if rouge == "coco" or meteor is not None:
        from pycocoevalcap.rouge.rouge import Rouge

        hyps, refs_tok = _tokenized(predictions, kept)
        pairs_h = [hyps[i] for i in owners]
        pairs_r = [r for refs in refs_tok for r in refs]
    if rouge == "coco":
        scorer = Rouge()
        per_sample["rouge_l"] = _max_per_sample(
            [float(scorer.calc_score([h], [r])) for h, r in zip(pairs_h, pairs_r)], owners, n)
    if meteor is not None:
        per_sample["meteor"] = _max_per_sample(meteor.score_pairs(pairs_h, pairs_r), owners, n)
    if encoder is not None:
        per_sample["embedding_sim"] = _best_similarity(
            [predictions[i] or "" for i in owners], [r for refs in kept for r in refs],
            owners, n, encoder)
    means = {name: float(np.mean(values)) if values else None
             for name, values in per_sample.items()}
    group_mean = {group: {name: float(np.mean([values[i] for i in positions]))
                          if positions else None for name, values in per_sample.items()}
                  for group, positions in (groups or {}).items()}
    return {"per_sample": per_sample, "mean": means, "group_mean": group_mean,
            "n_empty_predictions": sum(1 for h in predictions if not normalize_caption(h))}
