"""Image and caption processors for faces, registered with LAVIS.

LAVIS's ``blip_image_train`` adds RandAugment (rotations, shears, colour ops), which moves
facial geometry the captions describe. The paper trains with random resized crop and a
horizontal flip only; ``face_image_train`` does exactly that. ``face_image_train_au_cue``
is the same transform that also moves the face's 5 landmarks, for the AU-cue alignment loss;
``face_image_eval_au_cue`` is ``blip_image_eval`` that moves them too, for ATT-COS in
evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lavis.common.registry import registry
from lavis.processors.base_processor import BaseProcessor
from lavis.processors.blip_processors import BlipImageBaseProcessor, BlipImageEvalProcessor
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import InterpolationMode

from lavis_ext.errors import InputError


@registry.register_processor("face_image_train")
class FaceImageTrainProcessor(BlipImageBaseProcessor):
    def __init__(self, image_size: int = 224, mean: Any = None, std: Any = None,
                 min_scale: float = 0.8, max_scale: float = 1.0, hflip: bool = True):
        super().__init__(mean=mean, std=std)
        steps: list[Any] = [transforms.RandomResizedCrop(
            image_size, scale=(min_scale, max_scale), interpolation=InterpolationMode.BICUBIC)]
        if hflip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), self.normalize]
        self.transform = transforms.Compose(steps)

    def __call__(self, item):
        return self.transform(item)

    @classmethod
    def from_config(cls, cfg: Any = None) -> "FaceImageTrainProcessor":
        cfg = cfg if cfg is not None else OmegaConf.create()
        return cls(image_size=cfg.get("image_size", 224), mean=cfg.get("mean"),
                   std=cfg.get("std"), min_scale=cfg.get("min_scale", 0.8),
                   max_scale=cfg.get("max_scale", 1.0), hflip=cfg.get("hflip", True))


@registry.register_processor("face_caption")
class FaceCaptionProcessor(BaseProcessor):
    """Tidy a caption without changing its words: collapse white space, cap its length.

    LAVIS's ``blip_caption`` lowercases and strips punctuation, which suits short COCO
    captions but turns multi-sentence descriptions into text the (case-sensitive) LLM never
    saw, so its loss and its generations suffer.
    """

    def __init__(self, prompt: str = "", max_words: int = 200):
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        words = str(caption).split()
        return self.prompt + " ".join(words[: self.max_words])

    @classmethod
    def from_config(cls, cfg: Any = None) -> "FaceCaptionProcessor":
        cfg = cfg if cfg is not None else OmegaConf.create()
        return cls(prompt=cfg.get("prompt", ""), max_words=cfg.get("max_words", 200))


# The 5 points' order (image-left eye, image-right eye, nose tip, image-left mouth corner,
# image-right mouth corner) after a horizontal flip: what was on the right is now on the left.
FLIPPED_POINT_ORDER = (1, 0, 2, 4, 3)


def move_points(points: Any, box: tuple[float, float, float, float],
                out_size: tuple[int, int], processor: str) -> np.ndarray:
    """5 (x, y) points of an image, in the pixels of ``box`` = (left, top, width, height)
    resized to ``out_size`` = (width, height). Pixel centres are at integers (OpenCV's
    convention, as the aligner's warp and the region drawing use), so a pixel's centre maps
    to the centre of the pixels it becomes."""
    moved = np.array(points, dtype=np.float64).reshape(-1, 2)
    if moved.shape != (5, 2):
        raise InputError(f"{processor}: expected 5 (x, y) points, got an array of "
                         f"{moved.shape}")
    left, top, width, height = box
    moved[:, 0] = (moved[:, 0] + 0.5 - left) * out_size[0] / width - 0.5
    moved[:, 1] = (moved[:, 1] + 0.5 - top) * out_size[1] / height - 0.5
    return moved


@registry.register_processor("face_image_train_au_cue")
class FaceImageTrainAUCueProcessor(FaceImageTrainProcessor):
    """``face_image_train`` that also moves a face's 5 landmarks with the image, for the
    AU-cue alignment loss (``model.au_cue_loss``; docs/explain.md, "Alignment loss").

    The AU regions are drawn from the points after the transform, so the random resized crop
    and the flip must move the points exactly as they move the pixels; a flip also swaps the
    left and right eye and mouth-corner points, or the face frame of ``describe.regions``
    would point up the face. ``transform_with_points`` draws its random numbers as
    torchvision's transforms do (same calls, same order), so for one seed its image is the
    one ``face_image_train`` gives. Called with an image alone it is ``face_image_train``.
    Points use OpenCV's convention (pixel centres at integers), as the aligner's warp and the
    region drawing do.
    """

    needs_points = True  # FacialRecordDataset builds ``au_cue_map`` for such processors

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        steps = self.transform.transforms
        self._crop = steps[0]
        self._flip = steps[1] if isinstance(steps[1], transforms.RandomHorizontalFlip) else None
        self._to_tensor = transforms.Compose(steps[2 if self._flip is not None else 1:])

    def transform_with_points(self, image: Image.Image, points: Any
                              ) -> tuple[torch.Tensor, np.ndarray]:
        """The transformed image tensor and the (5, 2) points in its pixels."""
        crop = self._crop
        top, left, height, width = crop.get_params(image, crop.scale, crop.ratio)
        out_h, out_w = crop.size
        kwargs = {"antialias": crop.antialias} if hasattr(crop, "antialias") else {}
        image = TF.resized_crop(image, top, left, height, width, crop.size, crop.interpolation,
                                **kwargs)
        moved = move_points(points, (left, top, width, height), (out_w, out_h),
                            "face_image_train_au_cue")
        if self._flip is not None and torch.rand(1) < self._flip.p:
            image = TF.hflip(image)
            moved[:, 0] = (out_w - 1) - moved[:, 0]
            moved = moved[list(FLIPPED_POINT_ORDER)]
        return self._to_tensor(image), moved


@registry.register_processor("face_image_eval_au_cue")
class FaceImageEvalAUCueProcessor(BlipImageEvalProcessor):
    """``blip_image_eval`` (bicubic resize to ``image_size`` square, normalise) that also
    moves a face's 5 landmarks, so evaluation splits get ``au_cue_map`` / ``au_cue_mask``
    and the ``facial_captioning`` task reports ATT-COS (docs/explain.md, "ATT-COS in
    evaluation"). Deterministic: the points are scaled by the resize's own x and y factors.
    Its pixels are ``blip_image_eval``'s; called with an image alone it is that processor.
    """

    needs_points = True
    # How the datasets' errors name what needs the points, and the way out without them
    # (the training processor's wording is their default).
    cue_use = "ATT-COS in evaluation (vis_processor.eval face_image_eval_au_cue)"
    cue_fallback = "evaluate with vis_processor.eval: blip_image_eval (no ATT-COS)"

    def transform_with_points(self, image: Image.Image, points: Any
                              ) -> tuple[torch.Tensor, np.ndarray]:
        """The transformed image tensor and the (5, 2) points in its pixels."""
        out_h, out_w = self.transform.transforms[0].size
        moved = move_points(points, (0.0, 0.0, image.width, image.height), (out_w, out_h),
                            "face_image_eval_au_cue")
        return self.transform(image), moved
