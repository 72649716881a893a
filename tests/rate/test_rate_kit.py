"""Building the kit: what is left out and why, the --pred flags, the stratified sample."""
from collections import Counter

import pytest

from lavis_ext.errors import InputError, UsageError
from lavis_ext.rate.kit import (build_items, parse_pred_flags, read_predictions, sample_items,
                                stratified_quota)


def test_items_need_every_model_and_the_image(kit_files):
    preds = list(kit_files.preds.items())
    build = build_items(preds, [(kit_files.ann, kit_files.images)])
    assert sorted(i.image_id for i in build.items) == sorted(kit_files.ids)
    assert build.skipped == {"other split": 1, "not captioned by every model": 1,
                             "image not found": 1}
    item = next(i for i in build.items if i.image_id == "disfa-2")
    assert item.captions == {"mix": "mix says the face of disfa-2 frowns.",
                             "exp": "exp says the face of disfa-2 frowns."}
    assert item.image.endswith("disfa-2.png") and build.models == ["mix", "exp"]


def test_pred_flags_name_models_by_stem_or_name(tmp_path):
    assert parse_pred_flags(["a/mix.json", "Exp=b/x.json"]) == [
        ("mix", tmp_path.__class__("a/mix.json")), ("Exp", tmp_path.__class__("b/x.json"))]
    with pytest.raises(UsageError, match="at least two"):
        parse_pred_flags(["a.json"])
    with pytest.raises(UsageError, match="named 'x'"):
        parse_pred_flags(["a/x.json", "b/x.json"])


def test_bad_prediction_files_name_the_entry(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[{"image_id": "a", "caption": "x"}, {"image_id": "b"}]')
    with pytest.raises(InputError, match=r"p\.json\[1\]: expected an object"):
        read_predictions(path)
    path.write_text('[{"image_id": "a", "caption": "x"}, {"image_id": "a", "caption": "y"}]')
    with pytest.raises(InputError, match="'a' appears twice"):
        read_predictions(path)
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_predictions(path)


def test_nothing_to_rate_is_an_input_error(kit_files, tmp_path):
    with pytest.raises(InputError, match="no record can be rated.*image not found"):
        build_items(list(kit_files.preds.items()), [(kit_files.ann, tmp_path / "elsewhere")])


def test_quota_is_proportional_with_largest_remainders():
    # 505 of (610, 290, 100): exact shares 308.05, 146.45, 50.5 -> floors 308, 146, 50
    # (504); the largest remainder (0.5, disfa) gets the last one.
    assert stratified_quota({"bp4d": 610, "rafdb": 290, "disfa": 100}, 505) == {
        "bp4d": 308, "rafdb": 146, "disfa": 51}
    # 505 of (600, 300, 100): 303, 151.5, 50.5: a tie of remainders goes to the larger stratum.
    assert stratified_quota({"bp4d": 600, "rafdb": 300, "disfa": 100}, 505) == {
        "bp4d": 303, "rafdb": 152, "disfa": 50}
    # 5 of (6, 3, 3): 2.5, 1.25, 1.25 -> 2, 1, 1; the remainder goes to bp4d (0.5).
    assert stratified_quota({"bp4d": 6, "rafdb": 3, "disfa": 3}, 5) == {
        "bp4d": 3, "rafdb": 1, "disfa": 1}
    with pytest.raises(UsageError, match="--sample 13: expected 1 to 12"):
        stratified_quota({"bp4d": 6, "rafdb": 3, "disfa": 3}, 13)


def test_sample_is_stratified_and_repeatable(kit_files):
    items = build_items(list(kit_files.preds.items()), [(kit_files.ann, kit_files.images)]).items
    first = sample_items(items, 5, seed=7)
    assert Counter(i.dataset for i in first) == {"bp4d": 3, "rafdb": 1, "disfa": 1}
    assert [i.image_id for i in sample_items(list(reversed(items)), 5, seed=7)] == \
        [i.image_id for i in first]
    draws = {tuple(i.image_id for i in sample_items(items, 5, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters


def test_several_datasets_files_each_with_its_images_root(kit_files, tmp_path):
    """Table 5 draws from every Table 1 test set: one records file and images root each."""
    from lavis_ext.data.records import load_records, save_records
    from lavis_ext.rate.kit import paired_sources

    records = load_records(kit_files.ann)
    other = tmp_path / "other"
    other.mkdir()
    moved = [r for r in records if r["dataset"] == "disfa"]
    for record in moved:  # the disfa images live under another root, in another file
        (kit_files.images / record["image"]).rename(other / record["image"])
    save_records([r for r in records if r["dataset"] != "disfa"], tmp_path / "a.json")
    save_records(moved, tmp_path / "b.json")
    pairs = paired_sources([tmp_path / "a.json", tmp_path / "b.json"], [kit_files.images, other])
    build = build_items(list(kit_files.preds.items()), pairs)
    assert sorted(i.image_id for i in build.items) == sorted(kit_files.ids)
    # one root for both files: the disfa images are not under it
    one_root = build_items(list(kit_files.preds.items()),
                           paired_sources([tmp_path / "a.json", tmp_path / "b.json"],
                                          [kit_files.images]))
    assert one_root.skipped["image not found"] == 1 + len(moved)
    with pytest.raises(UsageError, match="2 roots for 3 --ann files"):
        paired_sources(["a", "b", "c"], ["x", "y"])
