"""Image and caption processors for faces, registered with LAVIS.

LAVIS's ``blip_image_train`` adds RandAugment (rotations, shears, colour ops), which moves
facial geometry the captions describe. The paper trains with random resized crop and a
horizontal flip only; ``face_image_train`` does exactly that.
"""
from __future__ import annotations

from typing import Any

from lavis.common.registry import registry
from lavis.processors.base_processor import BaseProcessor
from lavis.processors.blip_processors import BlipImageBaseProcessor
from omegaconf import OmegaConf
from torchvision import transforms
from torchvision.transforms.functional import InterpolationMode


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
