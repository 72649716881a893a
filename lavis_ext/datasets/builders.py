"""LAVIS dataset builders over local annotation records (no downloads).

Stock ``BaseDatasetBuilder`` wants a ``url:`` next to every ``storage:`` and downloads; these
builders read only local files: ``build_info.annotations.<split>.storage`` (one records JSON
or a list) and ``build_info.images.storage`` (the images root). Relative paths are relative
to the working directory (the rule of ``lavis_ext.io.resolve_path``, shared with the
facial_captioning task's references). A missing file is an error naming the file and its config key. A
split whose storage is null is left out. With ``vis_processor.train: face_image_train_au_cue``
(the AU-cue alignment loss) the training records, and with ``vis_processor.eval:
face_image_eval_au_cue`` (ATT-COS in evaluation) the val/test records, are checked for
landmarks at build time.

Registered names: ``<dataset>_caption`` for the eight datasets, ``<dataset>_au`` (bp4d, disfa,
gft, rafau, emotionet), ``<dataset>_emotion`` (affectnet, rafdb, faceme) and
``facial_caption_mix`` (a list of sources, each with its annotations and images root).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lavis.common.registry import registry
from lavis.datasets.builders.base_dataset_builder import BaseDatasetBuilder
from omegaconf import OmegaConf

from lavis_ext.data.records import load_records
from lavis_ext.errors import InputError
from lavis_ext.io import resolve_path
from lavis_ext.datasets.facial_datasets import (FacialAUDataset, FacialCaptionDataset,
                                                FacialEmotionDataset, emotion_class_name,
                                                moves_points)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SPLITS = ("train", "val", "test")


class FacialBuilderBase(BaseDatasetBuilder):
    """Builds one dataset per split from local records; subclasses choose the Dataset class."""

    name = "facial"
    dataset_cls: type = FacialCaptionDataset
    train_dataset_cls = eval_dataset_cls = FacialCaptionDataset

    def _key(self, *parts: str) -> str:
        return ".".join(("datasets", self.name) + parts)

    def _local_path(self, value: Any, key: str, *, is_dir: bool = False) -> str:
        if value is None or str(value).strip() == "":
            raise InputError(f"{self.name}: config key {key} is empty; set it in the dataset "
                             "YAML or with --options")
        path = resolve_path(str(value))
        ok = path.is_dir() if is_dir else path.is_file()
        if not ok:
            kind = "images root directory" if is_dir else "annotation file"
            raise FileNotFoundError(f"{self.name}: {kind} not found: {path} (config key {key})")
        return str(path)

    def _split_sources(self) -> dict[str, list[tuple[str, str]]]:
        """split -> [(records JSON, images root)], every path checked."""
        info = self.config.build_info
        if info.get("images") is None:
            raise InputError(f"{self.name}: config key {self._key('build_info', 'images')} "
                             "is missing")
        root = self._local_path(info.images.get("storage"),
                                self._key("build_info", "images", "storage"), is_dir=True)
        return self._annotation_sources(info.get("annotations") or {}, root,
                                        ("build_info", "annotations"))

    def _annotation_sources(self, annotations, root: str, key: tuple[str, ...]):
        sources: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            entry = annotations.get(split)
            storage = None if entry is None else entry.get("storage")
            if storage is None:
                continue
            paths = list(storage) if OmegaConf.is_list(storage) or isinstance(storage, list) \
                else [storage]
            full_key = self._key(*key, split, "storage")
            sources[split] = [(self._local_path(p, full_key), root) for p in paths]
        return sources

    def _download_data(self) -> None:
        """Nothing is downloaded: only check that every configured file is there."""
        sources = self._split_sources()
        if not sources:
            raise InputError(f"{self.name}: no split has build_info.annotations.<split>.storage")

    def dataset_kwargs(self, sources: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
        return {}

    def build(self) -> dict[str, Any]:
        self.build_processors()
        sources = self._split_sources()
        extra = self.dataset_kwargs(sources)
        datasets = {}
        bad_image = self.config.get("bad_image", "skip")
        if bad_image not in ("skip", "replace"):
            raise InputError(f"{self.name}: {self._key('bad_image')} must be 'skip' or 'replace', "
                             f"got {bad_image!r}")
        cache_mb = self.config.get("cache_images", 0) or 0
        if not isinstance(cache_mb, (int, float)) or isinstance(cache_mb, bool) or cache_mb < 0:
            raise InputError(f"{self.name}: {self._key('cache_images')} must be a size in MB "
                             f"(0: off), got {cache_mb!r}")
        for split, split_sources in sources.items():
            is_train = split == "train"
            mode = "train" if is_train else "eval"
            datasets[split] = self.dataset_cls(
                vis_processor=self.vis_processors[mode], text_processor=self.text_processors[mode],
                sources=split_sources, is_train=is_train, name=f"{self.name}/{split}", **extra)
            datasets[split].bad_image = bad_image
            datasets[split].cache_limit = cache_mb if is_train else 0
            if moves_points(self.vis_processors[mode]):  # AU-cue targets: refuse before training
                datasets[split].check_au_cue_points([path for path, _ in split_sources])
        return datasets


class FacialCaptionBuilder(FacialBuilderBase):
    dataset_cls = FacialCaptionDataset

    def dataset_kwargs(self, sources):
        kinds = self.config.get("caption_kinds")
        return {"caption_kinds": list(kinds) if kinds else None}


class FacialAUBuilder(FacialBuilderBase):
    dataset_cls = train_dataset_cls = eval_dataset_cls = FacialAUDataset

    def dataset_kwargs(self, sources):
        au_list = self.config.get("au_list")
        if not au_list:
            raise InputError(f"{self.name}: set {self._key('au_list')} (the AUs to classify)")
        return {"au_list": [int(a) for a in au_list]}


class FacialEmotionBuilder(FacialBuilderBase):
    dataset_cls = train_dataset_cls = eval_dataset_cls = FacialEmotionDataset

    def dataset_kwargs(self, sources):
        multi = bool(self.config.get("multi_label", False))
        classes = self.config.get("classes")
        if not classes:  # derive from the records, the same list for every split
            names: set[str] = set()
            for split_sources in sources.values():
                for ann_path, _ in split_sources:
                    for record in load_records(ann_path):
                        if record["emotions"]:
                            names.update(record["emotions"] if multi
                                         else [emotion_class_name(record)])
            classes = sorted(names)
        return {"classes": list(classes), "multi_label": multi}


class FacialCaptionMixBuilder(FacialCaptionBuilder):
    """``build_info.sources``: a list of ``{annotations: {train: ..., test: ...}, images: DIR}``;
    each split concatenates the sources' records, each read from its own images root."""

    def _split_sources(self):
        sources_cfg = self.config.build_info.get("sources")
        if not sources_cfg:
            raise InputError(f"{self.name}: {self._key('build_info', 'sources')} is empty")
        merged: dict[str, list[tuple[str, str]]] = {}
        for i, source in enumerate(sources_cfg):
            key = ("build_info", f"sources[{i}]")
            root = self._local_path(source.get("images"), self._key(*key, "images"), is_dir=True)
            found = self._annotation_sources(source.get("annotations") or {}, root,
                                             key + ("annotations",))
            for split, items in found.items():
                merged.setdefault(split, []).extend(items)
        return merged


def _register(name: str, base: type) -> type:
    cls = type(f"{''.join(p.title() for p in name.split('_'))}Builder", (base,), {
        "name": name, "DATASET_CONFIG_DICT": {"default": str(CONFIG_DIR / f"{name}.yaml")},
        "__doc__": f"LAVIS builder '{name}' (default config: configs/{name}.yaml).",
    })
    return registry.register_builder(name)(cls)


CAPTION_DATASETS = ("bp4d", "disfa", "gft", "rafau", "emotionet", "affectnet", "rafdb", "faceme",
                    "fea20k", "faba")
AU_DATASETS = ("bp4d", "disfa", "gft", "rafau", "emotionet")
EMOTION_DATASETS = ("affectnet", "rafdb", "faceme")

BUILDERS: dict[str, type] = {}
for _dataset in CAPTION_DATASETS:
    BUILDERS[f"{_dataset}_caption"] = _register(f"{_dataset}_caption", FacialCaptionBuilder)
for _dataset in AU_DATASETS:
    BUILDERS[f"{_dataset}_au"] = _register(f"{_dataset}_au", FacialAUBuilder)
for _dataset in EMOTION_DATASETS:
    BUILDERS[f"{_dataset}_emotion"] = _register(f"{_dataset}_emotion", FacialEmotionBuilder)
BUILDERS["facial_caption_mix"] = _register("facial_caption_mix", FacialCaptionMixBuilder)
