"""Chain-of-thought captions in ExpLLM's three parts: cot-rule by rule, cot-llm through the
local LLM stand-in with its validation, and ExpLLM's released descriptions imported."""
import json

import pytest

from lavis_ext.captions.cot import (UNDETERMINED, best_prototypes, cot_caption, cot_emotions,
                                    record_cot_caption)
from lavis_ext.captions.engine import synthesize_records
from lavis_ext.cli import main
from lavis_ext.data.records import add_captions, load_records, new_record, save_records
from lavis_ext.facs import AU_NUMBERS, BASIC_EMOTIONS
from lavis_ext.metrics.cot import parse_cot, split_cot

CODED = {str(a): 0 for a in (1, 2, 4, 6, 7, 12, 15)}


def _record(image_id, present=(), emotions=(), **extra):
    aus = dict(CODED, **{str(a): 1 for a in present})
    return new_record(f"img/{image_id}.jpg", image_id, "bp4d", "train", aus=aus,
                      emotions=list(emotions), **extra)


# The whole text for one known record: AU6 at level C, AU7 and AU12 present; happy.
HAPPY = ("**Key Observations:**\n"
         "- Cheek raiser (AU6) at marked intensity; typical of happiness.\n"
         "- Lid tightener (AU7); typical of anger and fear.\n"
         "- Lip corner puller (AU12); typical of happiness and contempt.\n"
         "**Overall Emotional Interpretation:** Together, AU6, AU7 and AU12 come closest to "
         "the prototype of happiness (2 of its 2 AUs). The dominant emotion is happiness.\n"
         "**Conclusion:** Happiness.")


def test_cot_rule_text_of_a_known_record():
    record = _record("r1", (6, 7, 12), ["happy"], au_intensity={"6": 3, "7": 0, "12": 0})
    assert record_cot_caption(record) == HAPPY
    # no AU coded: nothing to observe, not applicable
    assert record_cot_caption(new_record("x.jpg", "x", "rafdb", "train",
                                         emotions=["fear"])) is None


def test_cot_rule_conclusions_label_prototype_or_undetermined():
    # the label wins over the prototypes, and the text says how far it is from them
    text = cot_caption([6, 12], ["sadness"])
    assert "Sadness shares 0 of its 3 prototype AUs with them." in text
    assert split_cot(text).conclusion == "Sadness."
    # unlabelled: the one best prototype when it matches at least half
    assert split_cot(cot_caption([1, 4, 15])).conclusion == "Sadness."
    # unlabelled and no prototype close enough: undetermined, no emotion concluded
    text = cot_caption([9, 10])
    assert split_cot(text).conclusion == f"{UNDETERMINED}."
    assert parse_cot(text).emotions == set()
    # two prototypes tied (happiness 6+12, contempt 12+14): undetermined too
    assert [m.emotion for m in best_prototypes([6, 12, 14])] == ["happiness", "contempt"]
    text = cot_caption([6, 12, 14])
    assert "prototypes of happiness (2 of its 2 AUs) and contempt (2 of its 2 AUs)" in text
    assert split_cot(text).conclusion == f"{UNDETERMINED}."
    # no AU present: the neutral prototype
    assert split_cot(cot_caption([])).conclusion == "Neutral."


def test_cot_rule_reads_back_through_the_parser():
    for number in AU_NUMBERS:
        parsed = parse_cot(cot_caption([number], ["anger"], intensities={number: 2}))
        assert parsed.aus == {number} and parsed.intensities == {number: 2}
        assert parsed.emotions == {"anger"}
    for emotion in BASIC_EMOTIONS.values():
        parsed = parse_cot(cot_caption(emotion.prototype_aus, [emotion.name]))
        assert parsed.aus == set(emotion.prototype_aus) and parsed.emotions == {emotion.name}
        assert parsed.sections.complete


def test_unlabelled_records_take_the_pseudo_emotion():
    record = _record("p", (1, 2))
    assert cot_emotions(record) == ([], "")
    add_captions(record, "emotion-pseudo", ["The face shows surprise."])
    assert cot_emotions(record) == (["surprise"], "emotion-pseudo")
    assert split_cot(record_cot_caption(record)).conclusion == "Surprise."


def test_synthesize_cot_rule_cli(tmp_path, capsys):
    records = [_record("a", (6, 12), ["happiness"]), _record("b", (1, 4, 15), ["sadness"]),
               new_record("c.jpg", "c", "rafdb", "train", emotions=["fear"])]
    save_records(records, tmp_path / "in.json")
    out = tmp_path / "out.json"
    assert main(["synthesize", "--kind", "cot-rule", "--ann", str(tmp_path / "in.json"),
                 "--out", str(out), "--no-progress"]) == 0
    got = {r["image_id"]: r for r in load_records(out)}
    assert got["a"]["captions"]["cot-rule"] == [cot_caption([6, 12], ["happiness"])]
    assert got["a"]["caption"] == got["a"]["captions"]["cot-rule"]
    assert "cot-rule" not in (got["c"].get("captions") or {})
    summary = synthesize_records(list(got.values()), "cot-rule", progress=False)
    assert summary.already_done == 2 and summary.not_applicable == 1


# --- cot-llm: prompts, answers from the local stand-in, validation ------------------------

def test_cot_llm_through_the_local_server(make_server, tmp_path):
    from captions_testlib import fast_config

    server = make_server(faults={"sequence": ["restricted"]})
    pseudo = _record("p", (1, 2, 5))
    add_captions(pseudo, "emotion-pseudo", ["The face shows surprise."])
    records = [_record("a", (6, 12), ["happiness"], au_intensity={"6": 3}), pseudo,
               _record("u", (9, 10)), new_record("e.jpg", "e", "rafdb", "train",
                                                 emotions=["anger"])]
    summary = synthesize_records(records, "cot-llm", client_config=fast_config(server),
                                 cache_path=tmp_path / "c.sqlite", concurrency=1,
                                 progress=False)
    assert summary.added == 3 and summary.not_applicable == 1 and summary.failed == 0
    # the first answer ("The person shows AU 12 and looks happy.") was rejected, asked again
    assert summary.stats.rejected == 1 and sum(summary.stats.rejections.values()) == 1
    got = {r["image_id"]: (r.get("captions") or {}).get("cot-llm") for r in records}
    assert got["a"] == [cot_caption([6, 12], ["happiness"], intensities={6: 3})]
    assert got["p"] == [cot_caption([1, 2, 5], ["surprise"])]  # Emot-BLIP's emotion
    assert split_cot(got["u"][0]).conclusion == f"{UNDETERMINED}."
    assert got["e"] is None


def test_cot_messages_name_aus_levels_and_emotion():
    from lavis_ext.captions.prompts import cot_messages

    system, user = cot_messages([12, 6], ["happiness", "surprise"], levels={6: 3})
    assert system["role"] == "system" and user["role"] == "user"
    assert "Active action units: AU6 (cheek raiser, marked intensity), AU12 (lip corner " \
           "puller)" in user["content"]
    assert "Emotion label: happiness and surprise" in user["content"]
    assert "Emotion label: not given" in cot_messages([], [])[1]["content"]
    assert "Active action units: none" in cot_messages([], [])[1]["content"]


GOOD = ("**Key Observations:**\n- Brow lowerer (AU4) at severe intensity; the lids tighten "
        "(AU7).\n**Overall Emotional Interpretation:** Without a lip corner puller, the "
        "tension reads as anger rather than fear.\n**Conclusion:** Anger.")


@pytest.mark.parametrize("text, aus, emotions, reason", [
    (GOOD, [4, 7], ["anger"], ""),
    (GOOD.replace(":**", "**:"), [4, 7], ["angry"], ""),  # colon outside, adjective label
    (GOOD, [4, 7], [], ""),  # no emotion: conclusion unchecked
    (GOOD.replace("**Overall Emotional Interpretation:**", "Then"), [4, 7], ["anger"],
     "missing section ('Overall Emotional Interpretation')"),
    (GOOD.replace("**Conclusion:** Anger.", ""), [4, 7], ["anger"],
     "missing section ('Conclusion')"),
    (GOOD, [4], ["anger"], "names an AU outside the labels (AU7)"),
    (GOOD, [4, 7], ["fear"], "wrong conclusion ('Anger.' for fear)"),
    (GOOD.replace("Anger.", "Anger or fear."), [4, 7], ["anger"], "wrong conclusion"),
    (GOOD, [4, 7], ["anger", "surprise"], "wrong conclusion"),
])
def test_cot_validation(text, aus, emotions, reason):
    from lavis_ext.captions.validate import validate_answer

    verdict = validate_answer(text, "cot-llm", aus=aus, emotions=emotions, min_chars=60)
    assert verdict.ok == (not reason)
    assert verdict.reason.startswith(reason)
    if verdict.ok:
        assert verdict.text.count("\n") == 3  # one line per item and heading kept


# --- ExpLLM's released descriptions as cot references ------------------------------------

def _cot(observation, emotion, colon_inside=True):
    heads = ["Key Observations", "Overall Emotional Interpretation", "Conclusion"]
    mark = (lambda h: f"**{h}:**") if colon_inside else (lambda h: f"**{h}**:")
    return (f"{mark(heads[0])}\n- {observation}, scoring 0.807.\n{mark(heads[1])} These "
            f"combine.\n{mark(heads[2])}   {emotion}")


def test_import_expllm_descriptions(tmp_path, capsys):
    records = [new_record(f"basic/Image/aligned/test_000{i}_aligned.jpg", f"test_000{i}",
                          "rafdb", "test", emotions=[emo])
               for i, emo in ((1, "happiness"), (2, "sadness"), (3, "anger"))]
    records.append(new_record("other/test_0004_aligned.jpg", "x4", "rafdb", "test"))
    save_records(records, tmp_path / "records.json")
    au = [0.5] * 24
    rows = [
        {"file_name": "test_0001_aligned.jpg", "emo": "Happiness", "au": au,
         "description": _cot("Lip corner puller (AU12)", "Happiness")},
        {"file_name": "test_0002_aligned.jpg", "emo": "Sadness", "au": au,
         "description": _cot("Lip corner depressor (AU15)", "Sadness", colon_inside=False)},
        {"file_name": "test_0003_aligned.jpg", "emo": "Fear", "au": au,  # label is anger
         "description": _cot("Upper lid raiser (AU5)", "Fear")},
        {"file_name": "test_0004_aligned.jpg", "emo": "Neutral", "au": au,  # unlabelled: kept
         "description": _cot("No movement", "Neutral")},
        {"file_name": "test_0009_aligned.jpg", "emo": "Anger", "au": au,
         "description": _cot("Brow lowerer (AU4)", "Anger")},  # no such record
        {"file_name": "test_0001_aligned.jpg", "emo": "Happiness", "au": au,
         "description": "A smile, with no headings at all."},
        {"file_name": "", "emo": "Anger", "au": au, "description": _cot("x", "Anger")},
        {"file_name": "test_0002_aligned.jpg", "emo": "Sadness", "au": au, "description": ""},
    ]
    (tmp_path / "expllm.json").write_text(json.dumps(rows))
    out = tmp_path / "out.json"
    assert main(["import-captions", "--from", str(tmp_path / "expllm.json"),
                 "--ann", str(tmp_path / "records.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    got = {r["image_id"]: r for r in load_records(out)}
    assert got["test_0001"]["captions"]["cot"] == [_cot("Lip corner puller (AU12)",
                                                        "Happiness").replace("   ", " ")]
    assert split_cot(got["test_0002"]["captions"]["cot"][0]).conclusion == "Sadness"
    assert "captions" not in got["test_0003"]
    assert split_cot(got["x4"]["captions"]["cot"][0]).conclusion == "Neutral"
    assert "import-captions cot: 8 entries, 5 captions read" in printed
    assert "matched      3 entries -> 3 captions added" in printed
    assert "unmatched    1 entries (e.g. test_0009_aligned.jpg)" in printed
    assert "skipped      4 entries (" in printed
    for reason in ("emo differs from the record's emotions: 1",
                   "no 'Key Observations' heading: 1", "no file_name: 1",
                   "no description: 1", "test_0003_aligned.jpg (fear vs anger)"):
        assert reason in printed
    assert "4: 3 with captions['cot'], 1 without" in printed


def test_emotion_only_records_take_au_blip_pseudo_aus():
    record = new_record("rafdb/1.jpg", "r", "rafdb", "train", emotions=["happiness"])
    assert record_cot_caption(record) is None
    add_captions(record, "au-pseudo", ["It is a people who raises cheek with slight intensity "
                                       "and pulls lip corner."])
    assert record_cot_caption(record) == cot_caption([6, 12], ["happiness"],
                                                     intensities={6: 2})
