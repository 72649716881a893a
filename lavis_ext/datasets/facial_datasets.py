"""Torch datasets over annotation records, for LAVIS's runner.

Caption samples: ``{"image", "text_input", "image_id"}``. AU samples: ``{"image", "label"
(multi-hot float over ``au_list``), "label_mask" (1 where coded), "image_id"}``. Emotion
samples: ``{"image", "label" (class index, or multi-hot when ``multi_label``), "image_id"}``.
``image`` is the record's aligned face crop (``face_image``, written by ``expblip prepare
--faces align``) when it has one, else its source image.

An image that cannot be read is counted (``decode_failures``), logged and skipped: with
``bad_image="skip"`` (default) the item is ``None`` and ``collater`` drops it, filling an
all-bad batch with other readable items; with ``bad_image="replace"`` the next readable item
is returned instead (needed when LAVIS concatenates several training datasets, as its
``ConcatDataset.collater`` cannot take ``None``). A broken file never stops a long run.
With ``num_workers > 0`` each worker keeps its own count; the log lines name every failed file.

AU-cue targets (``model.au_cue_loss``; docs/explain.md, "Alignment loss"): when the training
image processor moves points too (``face_image_train_au_cue``), every sample also gets
``au_cue_map``, the merged heatmap of the record's present AUs (``aus`` coded 1) drawn from
its 5 landmarks after the processor's crop and flip, at the processed image's pixels
(``image_size`` square: the model area-averages it onto its own patch grid, so no grid is
configured), and ``au_cue_mask``: 1, or 0 for a record with no present AU (emotion-only
records, all AUs absent) or whose regions the crop cut away; its map is then all zeros and
the loss leaves it out. Records with a present AU must carry ``face_landmarks``
(``check_au_cue_points`` says which do not, at build time). The eval processor
``face_image_eval_au_cue`` (a deterministic resize) gives val/test samples the same two
fields, for the ``facial_captioning`` task's ATT-COS.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Iterable, Sequence

import torch
from lavis.datasets.datasets.base_dataset import BaseDataset
from PIL import Image
from torch.utils.data.dataloader import default_collate

import numpy as np

from lavis_ext.data.records import Record, image_file, load_records, present_aus
from lavis_ext.errors import InputError

logger = logging.getLogger(__name__)
MAX_REPLACEMENT_TRIES = 50


def collate_readable(dataset: Any, samples: list[dict[str, Any] | None],
                     failure: Callable[[], str]) -> dict[str, Any]:
    """Collate the samples whose image could be read (``None`` marks one that could not),
    drawing random replacements when a whole batch failed, so one bad file never stops a run;
    ``failure()`` words the error once replacements run out too."""
    kept = [s for s in samples if s is not None]
    tries = 0
    while not kept and len(dataset) and tries < MAX_REPLACEMENT_TRIES:
        tries += 1
        replacement = dataset[random.randrange(len(dataset))]
        if replacement is not None:
            kept.append(replacement)
    if not kept:
        raise RuntimeError(failure())
    return default_collate(kept)


def moves_points(processor: Any) -> bool:
    """Whether an image processor also transforms landmarks (``face_image_train_au_cue``,
    ``face_image_eval_au_cue``)."""
    return bool(getattr(processor, "needs_points", False))


AU_CUE_FIX = ("run `expblip prepare DATASET --root DIR --out DIR --faces align` (MTCNN's 5 "
              "points, stored with each crop), or ")
# What needs the points and the way out without them, unless the processor says otherwise.
AU_CUE_USE = "model.au_cue_loss (vis_processor face_image_train_au_cue)"
AU_CUE_FALLBACK = "train with vis_processor.train: face_image_train and " \
    "model.au_cue_loss.weight: 0"


def au_cue_fix(processor: Any) -> str:
    """The fix an error about missing points offers, worded for the processor's use
    (training's cue loss or evaluation's ATT-COS)."""
    return AU_CUE_FIX + getattr(processor, "cue_fallback", AU_CUE_FALLBACK)


def au_cue_target(aus: Sequence[int], points: np.ndarray | None,
                  size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(map, mask) of one training image: the AUs' merged heatmap at ``size`` = (width,
    height) and 1, or zeros and 0 when there is no AU or no region left inside the image."""
    from lavis_ext.describe.regions import heatmap

    width, height = size
    if not aus or points is None:
        return torch.zeros(height, width), torch.tensor(0.0)
    target = torch.from_numpy(heatmap(aus, points, size))
    return target, torch.tensor(1.0 if bool(target.any()) else 0.0)


class FacialRecordDataset(BaseDataset):
    """Records from one or more (annotation file, images root) sources."""

    def __init__(self, vis_processor=None, text_processor=None,
                 sources: Sequence[tuple[str, str]] = (), is_train: bool = False,
                 name: str = "facial") -> None:
        # BaseDataset.__init__ reads JSON without validation; records are loaded here instead.
        super().__init__(vis_processor, text_processor, None, [])
        self.name = name
        self.is_train = is_train
        self.annotation: list[Record] = []
        self.vis_roots: list[str] = []
        for ann_path, vis_root in sources:
            records = load_records(ann_path)
            self.annotation.extend(records)
            self.vis_roots.extend([str(vis_root)] * len(records))
        self.decode_failures = 0
        self.failed_images: list[str] = []
        self.bad_image = "skip"
        # ``cache_images`` (MB): keep decoded images in memory up to this size, so that a small
        # dataset read for many passes (the CPU demo: ~30 passes over 4k faces) decodes each
        # file once. The pixels are the same, so training is unchanged; 0 (default) is off.
        self.cache_limit = 0
        self._decoded: dict[int, Image.Image] = {}
        self._decoded_bytes = 0
        self._cue_points: dict[int, np.ndarray] = {}
        self._add_instance_ids()

    def image_path(self, index: int) -> str:
        """The aligned crop (``face_image``) when ``prepare --faces`` made one, else the
        source image: training sees the faces ``describe`` aligns at inference."""
        return str(image_file(self.annotation[index], self.vis_roots[index]))

    def load_image(self, index: int) -> Image.Image | None:
        cached = self._decoded.get(index)
        if cached is not None:
            return cached.copy()  # transforms never see (or change) the cached image
        path = self.image_path(index)
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
            size = image.width * image.height * 3
            if self._decoded_bytes + size <= self.cache_limit * 2**20:
                self._decoded[index] = image.copy()
                self._decoded_bytes += size
            return image
        except (OSError, ValueError, SyntaxError) as err:
            self.decode_failures += 1
            if len(self.failed_images) < 1000:
                self.failed_images.append(path)
            logger.warning("%s: skipping unreadable image %s (%s); %d skipped so far",
                           self.name, path, err, self.decode_failures)
            return None

    def _sample(self, index: int, image) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} must define _sample")

    def check_au_cue_points(self, files: Sequence[str] = ()) -> None:
        """Refuse, before training, records the AU-cue targets cannot be drawn for: a present
        AU with no spatial region, or no 5 landmarks where an AU is present. Records without
        a present AU need neither (their mask is 0)."""
        from lavis_ext.facs import ACTION_UNITS

        where = f" in {list(files)}" if files else ""
        missing = []
        for record in self.annotation:
            aus = present_aus(record)
            unknown = [au for au in aus if au not in ACTION_UNITS]
            if unknown:
                raise InputError(
                    f"{self.name}: record image_id {record['image_id']!r}{where} has present "
                    f"AU(s) {unknown} with no AU-cue region (known: {sorted(ACTION_UNITS)})")
            if aus and not record.get("face_landmarks"):
                missing.append(record)
        if missing:
            first = missing[0]
            raise InputError(
                f"{self.name}: {getattr(self.vis_processor, 'cue_use', AU_CUE_USE)} needs "
                f"the 5 face landmarks (field 'face_landmarks') of every record with a present "
                f"AU, but {len(missing)} of {len(self.annotation)} records{where} have none, "
                f"e.g. image_id {first['image_id']!r} (image {first['image']!r}): "
                + au_cue_fix(self.vis_processor))

    def cue_points(self, index: int, image: Image.Image) -> np.ndarray | None:
        """The record's 5 points in the pixels of the image ``load_image`` gives, or None
        when it has no present AU (no target, so no points needed).

        Source images: ``face_landmarks`` as stored. Aligned crops (``face_image``): the
        landmarks mapped by the crop's own warp, from the face and settings ``prepare
        --faces align`` stored in the crop (as ``explain --ann`` maps them)."""
        record = self.annotation[index]
        if not present_aus(record):
            return None
        if index in self._cue_points:
            return self._cue_points[index]
        if not record.get("face_landmarks"):
            raise InputError(f"{self.name}: record image_id {record['image_id']!r} has a "
                             "present AU but no 'face_landmarks' for its AU-cue map: "
                             + au_cue_fix(self.vis_processor))
        points = np.asarray(record["face_landmarks"], dtype=np.float64)
        if record.get("face_image"):
            points = self._crop_points(index, image)
        self._cue_points[index] = points
        return points

    def _crop_points(self, index: int, image: Image.Image) -> np.ndarray:
        from pathlib import Path

        from lavis_ext.describe.faces import Face, alignment_matrix, transform_points
        from lavis_ext.describe.prepare_faces import META_KEY, _read_crop_meta

        path = self.image_path(index)
        meta = _read_crop_meta(Path(path))
        if meta is None or not meta.get("face_landmarks") or not meta.get("face_box"):
            raise InputError(
                f"{self.name}: {path} (record image_id {self.annotation[index]['image_id']!r}) "
                f"has no face stored in it (PNG text '{META_KEY}' with face_box, "
                "face_landmarks and settings, written by expblip prepare --faces align), so "
                "where its 5 landmarks lie in the crop is unknown: "
                + au_cue_fix(self.vis_processor))
        face = Face(tuple(float(v) for v in meta["face_box"]), None,
                    [tuple(map(float, p)) for p in meta["face_landmarks"]])
        matrix = alignment_matrix(face, image.width, float(meta["settings"]["margin"]))
        return transform_points(face.landmarks, matrix)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        img = self.load_image(index)
        tries = 0
        while img is None and self.bad_image == "replace" and tries < MAX_REPLACEMENT_TRIES:
            tries += 1
            index = (index + 1) % len(self)
            img = self.load_image(index)
        if img is None:
            return None
        if not moves_points(self.vis_processor):
            image = self.vis_processor(img) if self.vis_processor is not None else img
            return self._sample(index, image)
        points = self.cue_points(index, img)
        if points is None:
            image = self.vis_processor(img)
        else:
            image, points = self.vis_processor.transform_with_points(img, points)
        cue_map, cue_mask = au_cue_target(present_aus(self.annotation[index]), points,
                                          (image.shape[-1], image.shape[-2]))
        return {**self._sample(index, image), "au_cue_map": cue_map, "au_cue_mask": cue_mask}

    def collater(self, samples: list[dict[str, Any] | None]) -> dict[str, Any]:
        return collate_readable(self, samples, lambda: (
            f"{self.name}: {MAX_REPLACEMENT_TRIES} images in a row could not be read "
            f"(e.g. {self.failed_images[-1:]}); check the images root"))


class FacialCaptionDataset(FacialRecordDataset):
    """One caption per item: a random one of the record's captions in training, else the first.

    ``caption_kinds`` restricts captions to those of given synthesis kinds (``captions[kind]``),
    e.g. ``["au-rule", "emotion-rule"]`` for Mix-BLIP from one records file.
    """

    def __init__(self, vis_processor=None, text_processor=None,
                 sources: Sequence[tuple[str, str]] = (), is_train: bool = False,
                 name: str = "facial_caption", caption_kinds: Iterable[str] | None = None) -> None:
        super().__init__(vis_processor, text_processor, sources, is_train, name)
        kinds = list(caption_kinds) if caption_kinds else None
        kept, roots, dropped = [], [], 0
        for record, root in zip(self.annotation, self.vis_roots):
            if kinds:
                texts = [t for k in kinds for t in record.get("captions", {}).get(k, [])]
            else:
                texts = list(record["caption"])
            if texts:
                kept.append(dict(record, caption=texts))
                roots.append(root)
            else:
                dropped += 1
        if dropped:
            logger.warning("%s: %d of %d records have no caption%s and are left out", name,
                           dropped, len(self.annotation),
                           f" of kinds {kinds}" if kinds else "")
        if not kept and self.annotation:
            raise InputError(
                f"{name}: none of the {len(self.annotation)} records in {[s[0] for s in sources]}"
                " has a caption" + (f" of kinds {kinds}" if kinds else "") +
                "; add captions first (expblip synthesize)")
        self.records_without_caption = dropped
        self.annotation, self.vis_roots = kept, roots
        self._add_instance_ids()

    def _sample(self, index: int, image) -> dict[str, Any]:
        record = self.annotation[index]
        captions = record["caption"]
        text = random.choice(captions) if self.is_train else captions[0]
        if self.text_processor is not None:
            text = self.text_processor(text)
        return {"image": image, "text_input": text, "image_id": record["image_id"]}


class FacialAUDataset(FacialRecordDataset):
    """Multi-label AU occurrence over ``au_list``; AUs not coded get mask 0."""

    def __init__(self, vis_processor=None, text_processor=None,
                 sources: Sequence[tuple[str, str]] = (), is_train: bool = False,
                 name: str = "facial_au", au_list: Sequence[int] = ()) -> None:
        super().__init__(vis_processor, text_processor, sources, is_train, name)
        if not au_list:
            raise InputError(f"{name}: au_list is empty; set it in the dataset YAML")
        self.au_list = [int(a) for a in au_list]
        self.label_names = [f"AU{a}" for a in self.au_list]

    def _sample(self, index: int, image) -> dict[str, Any]:
        record = self.annotation[index]
        values = [record["aus"].get(str(a)) for a in self.au_list]
        label = torch.tensor([1.0 if v == 1 else 0.0 for v in values])
        mask = torch.tensor([0.0 if v is None else 1.0 for v in values])
        return {"image": image, "label": label, "label_mask": mask,
                "image_id": record["image_id"]}


def emotion_class_name(record: Record) -> str:
    """A record's emotion class: one name, or ``a+b`` for compound labels."""
    return "+".join(record["emotions"])


class FacialEmotionDataset(FacialRecordDataset):
    """Emotion classes: a class index, or multi-hot over ``classes`` when ``multi_label``."""

    def __init__(self, vis_processor=None, text_processor=None,
                 sources: Sequence[tuple[str, str]] = (), is_train: bool = False,
                 name: str = "facial_emotion", classes: Sequence[str] = (),
                 multi_label: bool = False) -> None:
        super().__init__(vis_processor, text_processor, sources, is_train, name)
        if not classes:
            raise InputError(f"{name}: the emotion class list is empty")
        self.classes = list(classes)
        self.label_names = self.classes
        self.multi_label = multi_label
        self._index = {c: i for i, c in enumerate(self.classes)}
        kept, roots, dropped = [], [], 0
        for record, root in zip(self.annotation, self.vis_roots):
            known = (all(e in self._index for e in record["emotions"]) if multi_label
                     else emotion_class_name(record) in self._index)
            if record["emotions"] and known:
                kept.append(record)
                roots.append(root)
            else:
                dropped += 1
        if dropped:
            logger.warning("%s: %d records without a known emotion class left out", name,
                           dropped)
        self.records_without_class = dropped
        self.annotation, self.vis_roots = kept, roots
        self._add_instance_ids()

    def _sample(self, index: int, image) -> dict[str, Any]:
        record = self.annotation[index]
        if self.multi_label:
            label = torch.zeros(len(self.classes))
            for emotion in record["emotions"]:
                label[self._index[emotion]] = 1.0
        else:
            label = torch.tensor(self._index[emotion_class_name(record)], dtype=torch.long)
        return {"image": image, "label": label, "image_id": record["image_id"]}
