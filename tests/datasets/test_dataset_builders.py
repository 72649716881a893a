"""The registered builders give datasets that LAVIS's machinery iterates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

import lavis_ext  # noqa: F401  (registers the builders)
from lavis.common.registry import registry
from lavis.datasets.datasets.base_dataset import ConcatDataset
from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.records import add_captions, load_records, save_records
from lavis_ext.data.synthetic import make_synthetic
from lavis_ext.datasets.builders import BUILDERS


def prepared(tmp_path: Path, dataset: str, n: int = 24, captions: bool = True, **options):
    raw, out = tmp_path / f"{dataset}_raw", tmp_path / f"{dataset}_prep"
    make_synthetic(dataset, raw, n, seed=0, image_size=40, variant=options.pop("variant", None))
    prepare_dataset(dataset, raw, out, **options)
    if captions:
        for split in ("train", "test"):
            records = load_records(out / f"{split}.json")
            for record in records:
                add_captions(record, "au-rule", [f"first {record['image_id']}", "second"])
                add_captions(record, "emotion-rule", ["The face shows something."])
            save_records(records, out / f"{split}.json")
    return raw, out


def config(name: str, raw: Path, out: Path, **extra):
    cfg = OmegaConf.load(registry.get_builder_class(name).default_config_path()).datasets[name]
    for split in ("train", "test"):
        if split in cfg.build_info.annotations:
            cfg.build_info.annotations[split].storage = str(out / f"{split}.json")
    cfg.build_info.images.storage = str(raw)
    for key, value in extra.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def small_processors(cfg) -> None:
    for mode in ("train", "eval"):
        cfg.vis_processor[mode].image_size = 32


def test_all_builders_registered():
    for name in ["bp4d", "disfa", "gft", "rafau", "emotionet", "affectnet", "rafdb", "faceme"]:
        assert registry.get_builder_class(f"{name}_caption") is BUILDERS[f"{name}_caption"]
    for name in ["bp4d_au", "disfa_au", "gft_au", "rafau_au", "emotionet_au", "affectnet_emotion",
                 "rafdb_emotion", "faceme_emotion", "facial_caption_mix"]:
        assert registry.get_builder_class(name) is not None
        assert Path(BUILDERS[name].default_config_path()).is_file()


def test_caption_builder_iterates(tmp_path):
    raw, out = prepared(tmp_path, "rafau")
    cfg = config("rafau_caption", raw, out)
    small_processors(cfg)
    datasets = registry.get_builder_class("rafau_caption")(cfg).build_datasets()
    assert set(datasets) == {"train", "test"}
    train, test = datasets["train"], datasets["test"]
    assert len(train) + len(test) == 24
    batch = next(iter(DataLoader(train, batch_size=5, collate_fn=train.collater)))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert len(batch["text_input"]) == 5 and all(isinstance(t, str) for t in batch["text_input"])
    sample = test[0]
    assert set(sample) == {"image", "text_input", "image_id"}
    assert sample["text_input"] == f"first {sample['image_id']}"  # eval: first caption
    texts = {train[0]["text_input"] for _ in range(30)}
    assert len(texts) > 1  # train: a random caption each time
    only = config("rafau_caption", raw, out, caption_kinds=["emotion-rule"])
    small_processors(only)
    ds = registry.get_builder_class("rafau_caption")(only).build_datasets()["test"]
    # face_caption keeps the caption's case and punctuation (the LLM is case-sensitive)
    assert ds[0]["text_input"] == "The face shows something."


def test_uncaptioned_records_are_a_clear_error(tmp_path):
    raw, out = prepared(tmp_path, "rafdb", captions=False)
    with pytest.raises(ValueError, match="expblip synthesize"):
        builder = registry.get_builder_class("rafdb_caption")
        builder(config("rafdb_caption", raw, out)).build_datasets()


def test_missing_files_name_the_config_key(tmp_path):
    raw, out = prepared(tmp_path, "rafau", captions=False)
    cfg = config("rafau_caption", raw, out)
    cfg.build_info.annotations.test.storage = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError,
                       match=r"nope.json \(config key datasets.rafau_caption.build_info"
                             r".annotations.test.storage\)"):
        registry.get_builder_class("rafau_caption")(cfg).build_datasets()
    cfg = config("rafau_caption", raw, out)
    cfg.build_info.images.storage = str(tmp_path / "no_images")
    with pytest.raises(FileNotFoundError, match="images.storage"):
        registry.get_builder_class("rafau_caption")(cfg).build_datasets()


def test_au_and_emotion_builders(tmp_path):
    raw, out = prepared(tmp_path, "bp4d", n=30, captions=False, sample_every=1)
    cfg = config("bp4d_au", raw, out)
    small_processors(cfg)
    datasets = registry.get_builder_class("bp4d_au")(cfg).build_datasets()
    ds = datasets["train"]
    assert ds.label_names[:3] == ["AU1", "AU2", "AU4"]
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=ds.collater)))
    assert batch["label"].shape == (4, 12) and batch["label_mask"].shape == (4, 12)
    record = ds.annotation[0]
    expected = [1.0 if record["aus"][str(a)] == 1 else 0.0 for a in ds.au_list]
    assert ds[0]["label"].tolist() == expected

    raw, out = prepared(tmp_path, "rafdb", n=30, captions=False)
    cfg = config("rafdb_emotion", raw, out)
    small_processors(cfg)
    datasets = registry.get_builder_class("rafdb_emotion")(cfg).build_datasets()
    train, test = datasets["train"], datasets["test"]
    assert train.classes == test.classes and all("+" in c for c in train.classes)
    item = train[0]
    assert train.classes[int(item["label"])] == "+".join(train.annotation[0]["emotions"])

    raw, out = prepared(tmp_path, "faceme", n=20, captions=False)
    cfg = config("faceme_emotion", raw, out)
    small_processors(cfg)
    ds = registry.get_builder_class("faceme_emotion")(cfg).build_datasets()["train"]
    assert ds.multi_label and ds[0]["label"].sum() == len(ds.annotation[0]["emotions"])


def test_unreadable_image_is_counted_and_skipped(tmp_path):
    raw, out = prepared(tmp_path, "rafau", n=12)
    cfg = config("rafau_caption", raw, out)
    small_processors(cfg)
    ds = registry.get_builder_class("rafau_caption")(cfg).build_datasets()["train"]
    broken = Path(ds.image_path(0))
    broken.write_bytes(b"this is not a jpeg")
    Path(ds.image_path(1)).unlink()
    assert ds[0] is None and ds[1] is None and ds.decode_failures == 2
    batches = list(DataLoader(ds, batch_size=4, collate_fn=ds.collater))
    assert sum(len(b["image_id"]) for b in batches) == len(ds) - 2
    assert ds.decode_failures == 4 and str(broken) in ds.failed_images
    only_bad = ds.collater([None, None])  # an all-bad batch is refilled, never empty
    assert len(only_bad["image_id"]) == 1


def test_replace_mode_works_under_lavis_concat(tmp_path):
    raw_a, out_a = prepared(tmp_path, "rafau", n=12)
    raw_b, out_b = prepared(tmp_path, "rafdb", n=10)
    built = []
    for name, raw, out in (("rafau_caption", raw_a, out_a), ("rafdb_caption", raw_b, out_b)):
        cfg = config(name, raw, out, bad_image="replace")
        small_processors(cfg)
        built.append(registry.get_builder_class(name)(cfg).build_datasets()["train"])
    Path(built[0].image_path(0)).write_bytes(b"broken")
    item = built[0][0]
    assert item is not None and item["image_id"] == built[0].annotation[1]["image_id"]
    assert built[0].decode_failures == 1
    joined = ConcatDataset(built)  # what LAVIS's runner builds for several train datasets
    n = sum(len(b["image_id"]) for b in DataLoader(joined, batch_size=8,
                                                  collate_fn=joined.collater))
    assert n == len(joined)
    cfg = config("rafau_caption", raw_a, out_a, bad_image="ignore")
    with pytest.raises(ValueError, match="bad_image must be"):
        registry.get_builder_class("rafau_caption")(cfg).build_datasets()


def test_mix_builder_concatenates_sources(tmp_path):
    raw_a, out_a = prepared(tmp_path, "rafau", n=12)
    raw_b, out_b = prepared(tmp_path, "rafdb", n=10)
    cfg = OmegaConf.load(BUILDERS["facial_caption_mix"].default_config_path()) \
        .datasets.facial_caption_mix
    cfg.build_info.sources = [
        {"annotations": {"train": {"storage": str(out_a / "train.json")},
                         "test": {"storage": str(out_a / "test.json")}}, "images": str(raw_a)},
        {"annotations": {"train": {"storage": str(out_b / "train.json")}}, "images": str(raw_b)},
    ]
    small_processors(cfg)
    datasets = registry.get_builder_class("facial_caption_mix")(cfg).build_datasets()
    n_a = len(json.loads((out_a / "train.json").read_text()))
    n_b = len(json.loads((out_b / "train.json").read_text()))
    assert len(datasets["train"]) == n_a + n_b
    ids = {datasets["train"][i]["image_id"] for i in range(len(datasets["train"]))}
    assert any(i.startswith("compound_") for i in ids) and any(i.isdigit() for i in ids)
    joined = ConcatDataset([datasets["train"], datasets["test"]])  # LAVIS's own concat
    batch = next(iter(DataLoader(joined, batch_size=6, shuffle=True, collate_fn=joined.collater)))
    assert batch["image"].shape[0] == 6


def test_lavis_config_merge_and_task_build(tmp_path):
    """The path LAVIS's train.py takes: run-YAML overrides merged over our default YAML,
    BaseTask.build_datasets, then the runner's reorganisation and concatenation."""
    from types import SimpleNamespace

    from lavis.common.config import Config
    from lavis.datasets.data_utils import concat_datasets, reorg_datasets_by_split
    from lavis.tasks.base_task import BaseTask

    raw_a, out_a = prepared(tmp_path, "rafau", n=12)
    raw_b, out_b = prepared(tmp_path, "gft", n=15, sample_every=1)
    small = {"train": {"image_size": 32}, "eval": {"image_size": 32}}
    run_yaml = {"datasets": {
        name: {"bad_image": "replace", "vis_processor": small, "build_info": {
            "annotations": {"train": {"storage": str(out / "train.json")},
                            "test": {"storage": str(out / "test.json")} if test else None},
            "images": {"storage": str(raw)}}}
        for name, raw, out, test in (("rafau_caption", raw_a, out_a, True),
                                     ("gft_caption", raw_b, out_b, False))}}
    merged_cfg = Config.build_dataset_config(OmegaConf.create(run_yaml))
    cfg = SimpleNamespace(datasets_cfg=merged_cfg.datasets)
    assert cfg.datasets_cfg.rafau_caption.text_processor.train.name == "face_caption"  # default
    datasets = BaseTask().build_datasets(cfg)
    merged = concat_datasets(reorg_datasets_by_split(datasets))
    assert set(datasets["gft_caption"]) == {"train"}  # a split set to null is left out
    assert len(merged["test"]) == len(datasets["rafau_caption"]["test"])
    train = merged["train"]
    assert len(train) == sum(len(d["train"]) for d in datasets.values())
    batch = next(iter(DataLoader(train, batch_size=6, shuffle=True, collate_fn=train.collater)))
    assert batch["image"].shape == (6, 3, 32, 32)


def test_cache_images_decodes_each_training_file_once(tmp_path, monkeypatch):
    """datasets.<name>.cache_images (MB): the same pixels, each training file opened once."""
    from PIL import Image

    import lavis_ext.datasets.facial_datasets as facial

    raw, out = prepared(tmp_path, "rafau")
    plain_cfg = config("rafau_caption", raw, out)
    cached_cfg = config("rafau_caption", raw, out, cache_images=64)
    for cfg in (plain_cfg, cached_cfg):
        small_processors(cfg)
        cfg.vis_processor.train.name = "blip_image_eval"  # deterministic: compare pixels
    builder = registry.get_builder_class("rafau_caption")
    plain = builder(plain_cfg).build_datasets()
    cached = builder(cached_cfg).build_datasets()
    opened = []
    real_open = Image.open
    monkeypatch.setattr(facial.Image, "open", lambda path, *a, **k: (opened.append(str(path)),
                                                                     real_open(path, *a, **k))[1])
    train = cached["train"]
    first = [train[i]["image"] for i in range(len(train))]
    again = [train[i]["image"] for i in range(len(train))]
    assert len(opened) == len(train) == len(set(opened)), "each file decoded once"
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, plain["train"][i]["image"]) for i, a in enumerate(first))
    assert train.cache_limit == 64 and cached["test"].cache_limit == 0  # training split only
    opened.clear()
    [plain["train"][i] for i in range(3)], [plain["train"][i] for i in range(3)]
    assert len(opened) == 6, "off by default"


def test_cache_images_must_be_a_size(tmp_path):
    from lavis_ext.errors import InputError

    raw, out = prepared(tmp_path, "rafau", n=8)
    cfg = config("rafau_caption", raw, out, cache_images="lots")
    with pytest.raises(InputError, match=r"datasets.rafau_caption.cache_images must be a size in MB"):
        registry.get_builder_class("rafau_caption")(cfg).build_datasets()
