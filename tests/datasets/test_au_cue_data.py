"""AU-cue targets for training (``model.au_cue_loss``): the processor moves the 5 landmarks
exactly as it moves the pixels (flip included)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

import lavis_ext  # noqa: F401  (registers the processors and builders)
from lavis.common.registry import registry
from lavis_ext.errors import InputError

# Distinct colours for the 5 marks: left eye, right eye, nose, left and right mouth corner.
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)])
POINTS = np.array([[70.0, 52.0], [128.0, 55.0], [99.0, 80.0], [78.0, 104.0], [121.0, 106.0]])
RADIUS = 5


def _marked_image() -> Image.Image:
    """A 200 x 150 picture (not square: x and y scale differently) with a disc per point."""
    image = Image.new("RGB", (200, 150), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for (x, y), colour in zip(POINTS, COLOURS):
        draw.ellipse((x - RADIUS, y - RADIUS, x + RADIUS, y + RADIUS), fill=tuple(colour))
    return image


def _pixels(processor, tensor: torch.Tensor) -> np.ndarray:
    """The processed tensor back in 0-255 RGB (H, W, 3)."""
    mean = torch.tensor(processor.normalize.mean).view(3, 1, 1)
    std = torch.tensor(processor.normalize.std).view(3, 1, 1)
    return ((tensor * std + mean).clamp(0, 1) * 255).permute(1, 2, 0).numpy()


def _centroid(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    near = np.linalg.norm(pixels - colour, axis=-1) < 90
    if near.sum() < 5:
        return None
    ys, xs = np.nonzero(near)
    return np.array([xs.mean(), ys.mean()])


def _processor(**cfg):
    cls = registry.get_processor_class("face_image_train_au_cue")
    return cls.from_config(OmegaConf.create({"image_size": 112, "min_scale": 0.5, **cfg}))


def test_points_land_on_their_marks_after_crop_and_flip():
    processor = _processor()
    plain = registry.get_processor_class("face_image_train").from_config(
        OmegaConf.create({"image_size": 112, "min_scale": 0.5}))
    image = _marked_image()
    flipped = kept = checked = 0
    for seed in range(24):
        torch.manual_seed(seed)
        tensor, points = processor.transform_with_points(image, POINTS)
        torch.manual_seed(seed)
        assert torch.equal(tensor, plain(image)), "the same pixels as face_image_train"
        assert tensor.shape == (3, 112, 112) and points.shape == (5, 2)
        pixels = _pixels(processor, tensor)
        centroids = [_centroid(pixels, c) for c in COLOURS]
        # After a flip the red (source-left) eye is on the right: the image-left points are
        # then the green eye and the cyan corner. Either way, points 0 and 3 are left of 1, 4.
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]
        pairs = [(a, b) for a, b in ((0, 1), (3, 4))
                 if centroids[a] is not None and centroids[b] is not None]
        if not pairs:
            continue
        swapped = bool(centroids[pairs[0][0]][0] > centroids[pairs[0][1]][0])
        flipped += swapped
        kept += not swapped
        order = (1, 0, 2, 4, 3) if swapped else (0, 1, 2, 3, 4)
        for k, source in enumerate(order):
            inside = (RADIUS + 2 <= points[k]).all() and (points[k] <= 111 - RADIUS - 2).all()
            if not inside:
                continue
            assert centroids[source] is not None, (seed, k)
            assert np.abs(points[k] - centroids[source]).max() < 0.5, (seed, k, points[k],
                                                                       centroids[source])
            checked += 1
    assert flipped >= 5 and kept >= 5, (flipped, kept)
    assert checked >= 0.8 * 24 * 5, checked


def test_regions_stay_on_the_face_after_a_flip():
    """The brow region (AU1) is drawn above the eyes whether or not the image was flipped:
    without the left/right swap, the face frame would point up the face after a flip."""
    from lavis_ext.describe.regions import heatmap

    processor = _processor(min_scale=0.9)
    image = _marked_image()
    for seed in range(8):
        torch.manual_seed(seed)
        _, points = processor.transform_with_points(image, POINTS)
        brows = heatmap([1], points, (112, 112))
        rows = np.nonzero(brows.max(axis=1) > 0.5)[0]
        assert rows.size and rows.max() < min(points[0, 1], points[1, 1]), seed


def test_plain_call_and_bad_points():
    processor = _processor()
    assert processor(_marked_image()).shape == (3, 112, 112)
    with pytest.raises(InputError, match="expected 5"):
        processor.transform_with_points(_marked_image(), POINTS[:4])
    no_flip = _processor(hflip=False)
    for seed in range(6):
        torch.manual_seed(seed)
        _, points = no_flip.transform_with_points(_marked_image(), POINTS)
        assert points[0, 0] < points[1, 0]
