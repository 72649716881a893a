"""AU-cue targets for training (``model.au_cue_loss``): the processor moves the 5 landmarks
exactly as it moves the pixels (flip included), and the caption datasets give ``au_cue_map``
and ``au_cue_mask`` per sample, refusing records they cannot draw a map for."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

import lavis_ext  # noqa: F401  (registers the processors and builders)
from lavis.common.registry import registry
from lavis_ext.data.records import new_record, save_records
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


# --- datasets ---------------------------------------------------------------------------------

def _faces(root: Path, count: int = 6, size: int = 96):
    """Drawn faces (their 5 points known) written as records: AU records with landmarks,
    then one emotion-only record without AUs."""
    from lavis_ext.data.synthetic.face import draw_face_points

    rng = random.Random(0)
    records = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        aus = {"12": 1, "4": 0} if i % 2 else {"1": 1, "2": 1, "12": 0}
        image, points = draw_face_points({int(a): 3 for a, v in aus.items() if v}, rng, size)
        name = f"face{i}.png"
        image.save(root / name)
        record = new_record(name, f"f{i}", "synthetic", "train", aus=aus,
                            face_landmarks=[[round(float(x), 2), round(float(y), 2)]
                                            for x, y in points])
        record["caption"] = [f"caption {i}"]
        records.append(record)
    image, _ = draw_face_points({}, rng, size)
    image.save(root / "emotion.png")
    emotion = new_record("emotion.png", "e0", "synthetic", "train", emotions=["happiness"])
    emotion["caption"] = ["a happy face"]
    records.append(emotion)
    return records


def _build(ann: Path, images: Path, processor: str = "face_image_train_au_cue",
           image_size: int = 64):
    name = "emotionet_caption"
    cfg = OmegaConf.load(registry.get_builder_class(name).default_config_path()).datasets[name]
    cfg.build_info.annotations = {"train": {"storage": str(ann)}}
    cfg.build_info.images.storage = str(images)
    cfg.vis_processor.train = {"name": processor, "image_size": image_size}
    cfg.vis_processor.eval.image_size = image_size
    return registry.get_builder_class(name)(cfg).build_datasets()["train"]


def test_caption_dataset_gives_maps_and_masks(tmp_path):
    records = _faces(tmp_path / "images")
    save_records(records, tmp_path / "train.json")
    train = _build(tmp_path / "train.json", tmp_path / "images")
    torch.manual_seed(0)
    for index, record in enumerate(train.annotation):
        sample = train[index]
        assert sample["au_cue_map"].shape == (64, 64) and sample["au_cue_map"].dtype == \
            torch.float32
        if record["image_id"] == "e0":  # no AU labels: zero map, masked out
            assert float(sample["au_cue_mask"]) == 0.0 and not sample["au_cue_map"].any()
        else:
            assert float(sample["au_cue_mask"]) == 1.0
            assert float(sample["au_cue_map"].max()) == pytest.approx(1.0)
    batch = next(iter(DataLoader(train, batch_size=len(train), collate_fn=train.collater)))
    assert batch["au_cue_map"].shape == (len(records), 64, 64)
    assert batch["au_cue_mask"].tolist() == [0.0 if r["image_id"] == "e0" else 1.0
                                             for r in train.annotation]
    # Brows (AU1, 2) and mouth corners (AU12) go where the drawn faces have them: with a
    # full-image "crop" and no flip, the map is the heatmap of the points scaled to 64 px.
    from lavis_ext.describe.regions import heatmap

    exact = _build(tmp_path / "train.json", tmp_path / "images", image_size=64)
    exact.vis_processor = registry.get_processor_class("face_image_train_au_cue").from_config(
        OmegaConf.create({"image_size": 64, "min_scale": 1.0, "hflip": False}))
    scale = 64 / 96
    for index, record in enumerate(exact.annotation[:-1]):
        points = (np.asarray(record["face_landmarks"]) + 0.5) * scale - 0.5
        expected = heatmap([int(a) for a, v in record["aus"].items() if v == 1], points,
                           (64, 64))
        assert np.allclose(exact[index]["au_cue_map"].numpy(), expected, atol=1e-6)
    # The eval split keeps its plain processor: no maps.
    assert "au_cue_map" not in _build(tmp_path / "train.json", tmp_path / "images",
                                      processor="face_image_train")[0]


def test_records_without_landmarks_are_refused_at_build(tmp_path):
    records = _faces(tmp_path / "images", count=3)
    records[1]["face_landmarks"] = None
    records[-1].pop("face_landmarks", None)  # emotion-only: needs none
    save_records(records, tmp_path / "train.json")
    with pytest.raises(InputError, match=r"emotionet_caption/train: model.au_cue_loss .*"
                                         r"'face_landmarks'.* 1 of 4 records in .*train.json.*"
                                         r"image_id 'f1'.*--faces align"):
        _build(tmp_path / "train.json", tmp_path / "images")
    _build(tmp_path / "train.json", tmp_path / "images", processor="face_image_train")
    records[1]["aus"] = {"12": 0}  # no present AU: no map, so no points needed
    save_records(records, tmp_path / "train.json")
    assert float(_build(tmp_path / "train.json", tmp_path / "images")[1]["au_cue_mask"]) == 0


def test_aligned_crops_map_their_points_through_the_crops_warp(tmp_path):
    """A record with a crop of ``prepare --faces align`` (aligned here from the record's own
    box and points, so no detector runs): its points land on their marks inside the crop."""
    from lavis_ext.describe.prepare_faces import FacePreparer, FaceSettings

    (tmp_path / "images").mkdir()
    _marked_image().save(tmp_path / "images" / "marked.png")
    record = new_record("marked.png", "m0", "synthetic", "train", aus={"12": 1},
                        face_box=[55.0, 30.0, 90.0, 90.0], face_landmarks=POINTS.tolist())
    record["caption"] = ["smiles"]
    aligned, summary = FacePreparer(FaceSettings(size=96, margin=0.25)).prepare(
        [record], tmp_path / "images", tmp_path / "prepared", progress=False)
    assert summary["aligned"] == 1 and aligned[0].get("face_image")
    save_records(aligned, tmp_path / "train.json")
    train = _build(tmp_path / "train.json", tmp_path / "images")
    crop = train.load_image(0)
    assert crop.size == (96, 96)
    points = train.cue_points(0, crop)
    pixels = np.asarray(crop, dtype=np.float64)
    for k, colour in enumerate(COLOURS):
        assert np.abs(points[k] - _centroid(pixels, colour)).max() < 0.5, k
    assert float(train[0]["au_cue_mask"]) == 1.0
    # A face_image that prepare did not write has no stored face: refused, naming the file.
    Image.fromarray(np.asarray(crop)).save(tmp_path / "plain.png")
    aligned[0]["face_image"] = str(tmp_path / "plain.png")
    save_records(aligned, tmp_path / "train.json")
    with pytest.raises(InputError, match=r"plain.png .*image_id 'm0'.*no face stored"):
        _build(tmp_path / "train.json", tmp_path / "images")[0]


# --- evaluation: ATT-COS targets on test splits ------------------------------------------------

def _eval_processor(image_size: int = 112):
    cls = registry.get_processor_class("face_image_eval_au_cue")
    return cls.from_config(OmegaConf.create({"image_size": image_size}))


@pytest.mark.parametrize("image_size", [112, 224])
def test_eval_processor_moves_points_onto_their_marks(image_size):
    """A deterministic squash of the 200 x 150 picture to a square (x and y scale apart,
    down and up): every mark lands where its point says, and the pixels are
    blip_image_eval's."""
    processor = _eval_processor(image_size)
    plain = registry.get_processor_class("blip_image_eval").from_config(
        OmegaConf.create({"image_size": image_size}))
    image = _marked_image()
    tensor, points = processor.transform_with_points(image, POINTS)
    assert torch.equal(tensor, plain(image)) and torch.equal(processor(image), tensor)
    again, same = processor.transform_with_points(image, POINTS)
    assert torch.equal(again, tensor) and np.array_equal(same, points)
    assert tensor.shape == (3, image_size, image_size) and points.shape == (5, 2)
    pixels = _pixels(processor, tensor)
    for k, colour in enumerate(COLOURS):
        centroid = _centroid(pixels, colour)
        assert centroid is not None, k
        # within a quarter pixel (the corner convention, points * scale, is off by 0.3)
        assert np.abs(points[k] - centroid).max() < 0.25, (k, points[k], centroid)
    # The order is kept (no flip) and the scale is the resize's own, per axis, about pixel
    # centres.
    assert np.allclose(points, (POINTS + 0.5) * [image_size / 200, image_size / 150] - 0.5)
    with pytest.raises(InputError, match="face_image_eval_au_cue: expected 5"):
        processor.transform_with_points(image, POINTS[:3])


def _build_eval(ann: Path, images: Path, processor: str = "face_image_eval_au_cue",
                image_size: int = 64):
    name = "emotionet_caption"
    cfg = OmegaConf.load(registry.get_builder_class(name).default_config_path()).datasets[name]
    cfg.build_info.annotations = {"test": {"storage": str(ann)}}
    cfg.build_info.images.storage = str(images)
    cfg.vis_processor.eval = {"name": processor, "image_size": image_size}
    return registry.get_builder_class(name)(cfg).build_datasets()["test"]


def test_eval_split_gives_the_maps_of_the_resized_points(tmp_path):
    from lavis_ext.describe.regions import heatmap

    records = _faces(tmp_path / "images")
    save_records(records, tmp_path / "test.json")
    test = _build_eval(tmp_path / "test.json", tmp_path / "images")
    assert not test.is_train
    scale = 64 / 96
    for index, record in enumerate(test.annotation):
        sample = test[index]
        if record["image_id"] == "e0":  # emotion-only: no labelled AU, nothing to score
            assert float(sample["au_cue_mask"]) == 0.0 and not sample["au_cue_map"].any()
            continue
        points = (np.asarray(record["face_landmarks"]) + 0.5) * scale - 0.5
        expected = heatmap([int(a) for a, v in record["aus"].items() if v == 1], points,
                           (64, 64))
        assert float(sample["au_cue_mask"]) == 1.0
        assert np.array_equal(sample["au_cue_map"].numpy(), expected)  # no randomness
    assert "au_cue_map" not in _build_eval(tmp_path / "test.json", tmp_path / "images",
                                           processor="blip_image_eval")[0]
    records[2]["face_landmarks"] = None
    save_records(records, tmp_path / "test.json")
    with pytest.raises(InputError, match=r"emotionet_caption/test: ATT-COS in evaluation "
                                         r"\(vis_processor.eval face_image_eval_au_cue\).*"
                                         r"image_id 'f2'.*--faces align.*blip_image_eval"):
        _build_eval(tmp_path / "test.json", tmp_path / "images")
