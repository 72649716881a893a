"""Table 2 protocols: AU references only, one row per dataset, equal to pycocoevalcap.

The expected numbers are computed here with pycocoevalcap alone (PTB tokenizer, then METEOR
and ROUGE-L), per dataset, on the AU captions alone, with nothing of lavis_ext's scoring code
involved: for ``best`` (the paper's), one pycocoevalcap run per reference, each image keeping
its highest score; for ``coco``, COCO's caption evaluation with all references at once.
"""
import json

import pytest

from lavis_ext.cli import main
from lavis_ext.data.records import add_captions, new_record, save_records

AU_LLM = {
    (1, 2): "The inner and outer parts of the eyebrows are lifted, widening the eyes.",
    (6, 12): "The cheeks rise while the corners of the lips are pulled up and back.",
    (4,): "The brows are drawn down and together, creasing the space between them.",
    (12, 25): "The lip corners are pulled up and the lips part slightly.",
}
FUSED = "The cheeks are raised and the person smiles happily, which shows happiness."
PREDICTIONS = [
    "It is a people who raises inner eyebrow and raises outer eyebrow.",
    "The cheeks are raised and the person smiles happily.",
    "The brows are lowered, frowning.",
    "",  # an empty prediction is scored as the COCO pipeline scores it
    "Lips part while the lip corners are pulled up!",
    "The eyebrows are lifted.",
]
AU_SETS = [(1, 2), (6, 12), (4,), (6, 12), (12, 25), (1, 2)]
DATASETS = ["rafau", "rafau", "rafau", "gft", "gft", "gft"]


def table2_records():
    from lavis_ext.captions import rules

    records = []
    for i, (aus, dataset) in enumerate(zip(AU_SETS, DATASETS)):
        record = new_record(f"{dataset}/{i}.jpg", f"{dataset}_{i}", dataset, "test",
                            aus={str(a): 1 for a in aus})
        add_captions(record, "au-rule", [rules.au_caption(list(aus))])
        add_captions(record, "au-llm", [AU_LLM[aus]])
        add_captions(record, "fuse", [FUSED])  # must not count as a reference
        records.append(record)
    # a train record and a record of another kind only: left out / counted
    records.append(new_record("x.jpg", "train_0", "rafau", "train", aus={"4": 1}))
    return records


@pytest.fixture(scope="module")
def meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    yield scorer
    with scorer.lock:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()


def coco_pipeline(meteor, gts, res, per_image=False):
    """PTB tokenizer, then METEOR and ROUGE-L, as COCOEvalCap runs them (one tokenizer call
    for references and predictions, keys kept apart): the corpus scores, or with
    ``per_image`` the per-image scores by key."""
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    both = {**{("gt", k): [{"caption": c} for c in v] for k, v in gts.items()},
            **{("res", k): [{"caption": c} for c in v] for k, v in res.items()}}
    tokens = PTBTokenizer().tokenize(both)
    gts = {k: tokens[("gt", k)] for k in gts}
    res = {k: tokens[("res", k)] for k in res}
    meteor_score, meteor_images = meteor.compute_score(gts, res)
    rouge_score, rouge_images = Rouge().compute_score(gts, res)
    if per_image:  # both scorers keep the order of gts.keys()
        return ({k: float(m) for k, m in zip(gts, meteor_images)},
                {k: float(r) for k, r in zip(gts, rouge_images)})
    return meteor_score, rouge_score


@pytest.mark.slow  # two METEOR JVMs and five tokenizer runs: ~40 s on a busy 2-core machine
def test_coco_protocol_by_dataset_equals_the_coco_pipeline_per_dataset(tmp_path, capsys, meteor):
    records = table2_records()
    save_records(records, tmp_path / "gt.json")
    preds = [{"image_id": r["image_id"], "caption": p} for r, p in zip(records, PREDICTIONS)]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "gt.json"), "--split", "test", "--out", str(out),
                 "--encoder", "none", "--ref-kinds", "au-rule,au-llm", "--by", "dataset",
                 "--name", "AU-BLIP", "--protocol", "coco"])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())["AU-BLIP"]
    assert result["ref_kinds"] == ["au-rule", "au-llm"] and result["protocol"] == "coco"
    assert set(result["groups"]) == {"rafau", "gft"}
    by_id = {r["image_id"]: r for r in records}
    for dataset in ("rafau", "gft"):
        ids = [p["image_id"] for p in preds if by_id[p["image_id"]]["dataset"] == dataset]
        gts = {i: by_id[i]["captions"]["au-rule"] + by_id[i]["captions"]["au-llm"] for i in ids}
        res = {p["image_id"]: [p["caption"]] for p in preds if p["image_id"] in gts}
        expected_meteor, rouge = coco_pipeline(meteor, gts, res)
        got = result["groups"][dataset]["metrics"]
        assert got["meteor"] == pytest.approx(expected_meteor, abs=1e-12)
        assert got["rouge_l"] == pytest.approx(rouge, abs=1e-12)
        assert result["groups"][dataset]["n_scored"] == 3
        assert f"| AU-BLIP | {dataset} | {expected_meteor:.3f} | {rouge:.3f} |" in printed
    # the pooled row is the same pipeline over both datasets
    gts = {i: r["captions"]["au-rule"] + r["captions"]["au-llm"]
           for i, r in by_id.items() if r["split"] == "test"}
    expected_meteor, rouge = coco_pipeline(meteor, gts,
                                           {p["image_id"]: [p["caption"]] for p in preds})
    assert result["metrics"]["meteor"] == pytest.approx(expected_meteor, abs=1e-12)
    assert result["metrics"]["rouge_l"] == pytest.approx(rouge, abs=1e-12)
    assert "| AU-BLIP | all |" in printed
    # with every caption as a reference (fuse included) the scores change: the filter matters
    everything = tmp_path / "all.json"
    main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann", str(tmp_path / "gt.json"),
          "--split", "test", "--out", str(everything), "--encoder", "none", "--no-meteor",
          "--protocol", "coco"])
    pooled_all = json.loads(everything.read_text())["pred"]["metrics"]["rouge_l"]
    assert pooled_all != pytest.approx(rouge)


@pytest.mark.slow  # two METEOR JVMs and several tokenizer runs: ~40 s on a busy 2-core machine
def test_best_protocol_by_dataset_is_the_best_single_reference_pycocoevalcap_score(
        tmp_path, capsys, meteor):
    records = table2_records()
    save_records(records, tmp_path / "gt.json")
    preds = [{"image_id": r["image_id"], "caption": p} for r, p in zip(records, PREDICTIONS)]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "gt.json"), "--split", "test", "--out", str(out),
                 "--encoder", "none", "--ref-kinds", "au-rule,au-llm", "--by", "dataset",
                 "--name", "AU-BLIP"])  # best is the default protocol
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())["AU-BLIP"]
    assert result["protocol"] == "best" and "§4.1" in result["protocol_definition"]
    by_id = {r["image_id"]: r for r in records if r["split"] == "test"}
    caption = {p["image_id"]: p["caption"] for p in preds}
    # one pycocoevalcap run per reference position (rule, then LLM): single-reference scores
    singles = {"meteor": {i: [] for i in by_id}, "rouge_l": {i: [] for i in by_id}}
    for kind in ("au-rule", "au-llm"):
        gts = {i: [r["captions"][kind][0]] for i, r in by_id.items()}
        m, r = coco_pipeline(meteor, gts, {i: [caption[i]] for i in gts}, per_image=True)
        for i in gts:
            singles["meteor"][i].append(m[i])
            singles["rouge_l"][i].append(r[i])
    best = {metric: {i: max(v) for i, v in values.items()} for metric, values in singles.items()}
    # the best reference differs between images
    assert len({v.index(max(v)) for v in singles["rouge_l"].values()}) == 2
    per_sample = {s["image_id"]: s for s in result["per_sample"]}
    for metric in ("meteor", "rouge_l"):
        for i in by_id:
            assert per_sample[i][metric] == pytest.approx(best[metric][i], abs=1e-12)
    coco_meteor, _ = coco_pipeline(
        meteor, {i: r["captions"]["au-rule"] + r["captions"]["au-llm"] for i, r in by_id.items()},
        {i: [caption[i]] for i in by_id})
    for dataset in ("rafau", "gft"):
        ids = [i for i, r in by_id.items() if r["dataset"] == dataset]
        got = result["groups"][dataset]["metrics"]
        expected = {m: sum(best[m][i] for i in ids) / len(ids) for m in best}
        assert got["meteor"] == pytest.approx(expected["meteor"], abs=1e-12)
        assert got["rouge_l"] == pytest.approx(expected["rouge_l"], abs=1e-12)
        assert f"| AU-BLIP | {dataset} | {expected['meteor']:.3f} | {expected['rouge_l']:.3f} |" \
            in printed
    pooled = {m: sum(best[m].values()) / len(by_id) for m in best}
    assert result["metrics"]["meteor"] == pytest.approx(pooled["meteor"], abs=1e-12)
    assert result["metrics"]["rouge_l"] == pytest.approx(pooled["rouge_l"], abs=1e-12)
    # METEOR: the mean of per-image maxima is not COCO's corpus score (for ROUGE-L the two
    # rules part where precision and recall peak on different references:
    # test_captioning.py::test_best_protocol_keeps_the_best_single_reference_rouge)
    assert pooled["meteor"] != pytest.approx(coco_meteor, abs=1e-4)
    assert caption["gft_3"] == "" and per_sample["gft_3"]["rouge_l"] == 0.0


def test_ref_kinds_that_no_record_has_is_a_clear_error(tmp_path, capsys):
    save_records(table2_records(), tmp_path / "gt.json")
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": "gft_3", "caption": "x"}]))
    code = main(["evaluate", "--pred", str(tmp_path / "pred.json"), "--ann",
                 str(tmp_path / "gt.json"), "--encoder", "none", "--no-meteor",
                 "--ref-kinds", "au-gpt"])
    assert code == 2
    err = capsys.readouterr().err
    assert "kinds ['au-gpt']" in err and "au-llm" in err and "au-rule" in err
