"""Caption metrics against independent computations (pycocoevalcap, raw MiniLM)."""
import json

import numpy as np
import pytest

from lavis_ext.metrics.captioning import MeteorScorer, normalize_caption, score_captions
from lavis_ext.metrics.embeddings import MiniLMEncoder, OpenAIEncoder, build_encoder
from lavis_ext.metrics.evaluate import evaluate_captions

PAIRS = [
    ("the inner brows are raised and the lips part", "it raises inner eyebrow and separates lips"),
    ("a person smiling with raised cheeks", "the cheeks are raised and the person is smiling"),
    ("eyes closed", "the eyes are closed and the jaw drops"),
    ("completely unrelated words here", "the brow is lowered"),
]


def test_best_protocol_keeps_the_best_single_reference_rouge():
    from pycocoevalcap.rouge.rouge import Rouge

    hyp = "the brows are raised and the person smiles"
    refs = ["a completely different caption", "the brows are raised and the person is smiling",
            "brows raised"]
    out = score_captions([hyp], [refs])
    # lowercase words without punctuation: the PTB tokenizer leaves these texts as they are
    singles = [Rouge().calc_score([hyp], [r]) for r in refs]
    assert out["per_sample"]["rouge_l"][0] == pytest.approx(max(singles), abs=1e-12)
    assert max(singles) > min(singles)
    # Not the COCO multi-reference rule (max precision and max recall taken separately).
    coco_multi = Rouge().calc_score([hyp], refs)
    assert out["per_sample"]["rouge_l"][0] != pytest.approx(coco_multi)


def test_best_protocol_tokenizes_like_pycocoevalcap():
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    hyp, ref = "The lips part, and the brows-rise!", "The brows rise; the lips part."
    tokens = PTBTokenizer().tokenize({"h": [{"caption": hyp}], "r": [{"caption": ref}]})
    expected = Rouge().calc_score(tokens["h"], tokens["r"])
    assert score_captions([hyp], [[ref]])["per_sample"]["rouge_l"][0] == \
        pytest.approx(expected, abs=1e-12)


def test_empty_prediction_scores_zero_and_empty_references_are_an_error():
    out = score_captions(["", "brows raised"], [["brows raised"], ["brows raised"]])
    assert out["per_sample"]["rouge_l"] == [0.0, 1.0]
    assert out["n_empty_predictions"] == 1
    with pytest.raises(ValueError, match="sample 0 has no non-empty reference"):
        score_captions(["brows raised"], [["", "  "]])


def test_meteor_matches_direct_pycocoevalcap_calls(minilm):
    from pycocoevalcap.meteor.meteor import Meteor

    hyps = [normalize_caption(h) for h, _ in PAIRS]
    refs = [normalize_caption(r) for _, r in PAIRS]
    direct = Meteor()  # one JVM (slow to start) for both computations
    expected = [direct.compute_score({"a": [r]}, {"a": [h]})[1][0] for h, r in zip(hyps, refs)]
    cross = direct.compute_score({"a": [refs[2]]}, {"a": [hyps[0]]})[1][0]
    records = [{"image_id": f"{i:02d}", "aus": {}, "emotions": [], "caption": [ref]}
               for i, (_, ref) in enumerate(PAIRS)]
    predictions = [{"image_id": f"{i:02d}", "caption": hyp} for i, (hyp, _) in enumerate(PAIRS)]
    with MeteorScorer(direct) as scorer:  # batched pairs, then the per-sample maximum
        got = scorer.score_pairs(hyps, refs)
        multi = score_captions([PAIRS[0][0]], [[PAIRS[2][1], PAIRS[0][1]]], meteor=scorer)
        full = evaluate_captions(predictions, records, meteor=scorer, encoder=minilm,
                                 protocol="best")
        coco = evaluate_captions(predictions, records, meteor=scorer, encoder=None,
                                 protocol="coco")
        corpus = direct.compute_score({str(i): [r] for i, r in enumerate(refs)},
                                      {str(i): [h] for i, h in enumerate(hyps)})[0]
    assert direct.meteor_p.poll() is not None  # closed with the scorer
    # coco protocol: the jar's corpus-level score, not the mean of the segment scores
    assert coco["metrics"]["meteor"] == pytest.approx(corpus, abs=1e-12)
    assert corpus != pytest.approx(np.mean(expected))
    assert got == pytest.approx(expected, abs=1e-9)
    assert expected[0] != pytest.approx(cross)
    assert multi["per_sample"]["meteor"][0] == pytest.approx(max(expected[0], cross), abs=1e-9)
    assert [s["meteor"] for s in full["per_sample"]] == pytest.approx(expected, abs=1e-9)
    assert full["metrics"]["meteor"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert set(full["metrics"]) >= {"meteor", "rouge_l", "embedding_sim", "au_f1_macro"}


def test_meteor_scorer_closes_the_process_it_starts():
    with MeteorScorer() as scorer:
        process = scorer._meteor.meteor_p
        assert process.poll() is None
    assert process.poll() is not None


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_minilm_matches_a_direct_numpy_computation(minilm):
    import torch
    from transformers import BertModel, BertTokenizer

    texts = ["the brows are raised", "the eyebrows lift", "a cat sits on a car"]
    tokenizer = BertTokenizer(f"{minilm.folder}/vocab.txt")  # the slow tokenizer, on purpose
    model = BertModel.from_pretrained(minilm.folder).eval()
    expected = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids).last_hidden_state[0].numpy()  # no padding: plain mean
        vector = hidden.mean(axis=0)
        expected.append(vector / np.linalg.norm(vector))
    got = minilm.encode(texts)
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    sims = got @ got.T
    assert sims[0, 1] > 0.5 > sims[0, 2]


def test_embedding_similarity_is_best_cosine_over_references(minilm):
    refs = ["the eyebrows lift", "a cat sits on a car"]
    out = score_captions(["the brows are raised"], [refs], encoder=minilm)
    v = minilm.encode(["the brows are raised", *refs])
    assert out["per_sample"]["embedding_sim"][0] == pytest.approx(
        max(float(v[0] @ v[1]), float(v[0] @ v[2])), abs=1e-6)


class FakeEmbeddings:
    """Stands in for openai.OpenAI().embeddings: records the calls."""

    def __init__(self):
        self.calls = []

    def create(self, model, input):
        self.calls.append(list(input))

        class Item:
            def __init__(self, i, text):
                self.index = i
                self.embedding = [float(len(text)), 1.0, 0.0]

        class Response:
            data = [Item(i, t) for i, t in reversed(list(enumerate(input)))]

        return Response()


class FakeClient:
    def __init__(self):
        self.embeddings = FakeEmbeddings()


def test_openai_encoder_caches_to_disk_and_normalises(tmp_path, monkeypatch):
    cache = tmp_path / "emb.jsonl"
    client = FakeClient()
    enc = OpenAIEncoder("text-embedding-3-small", cache_path=cache, client=client)
    v = enc.encode(["ab", "abcd", "ab"])
    assert client.embeddings.calls == [["ab", "abcd"]]  # deduplicated, one batch
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(v[0], v[2])
    again = OpenAIEncoder("text-embedding-3-small", cache_path=cache, client=FakeClient())
    again.encode(["abcd", "ab"])
    assert again._client.embeddings.calls == []  # served from the cache file
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(lines) == 2 and all(set(item) == {"key", "embedding"} for item in lines)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        build_encoder("openai:text-embedding-ada-002")
    with pytest.raises(ValueError, match="unknown embedding encoder"):
        build_encoder("word2vec")
