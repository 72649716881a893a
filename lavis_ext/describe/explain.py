"""``expblip explain``: where the captioner looks when it describes a face.

For each image the largest face is found and aligned as ``describe`` does, captioned once,
and the Q-Former's cross-attention of that caption pass is read
(``lavis_ext.models.attention``). The AUs the caption names (read back with the caption
parser) get their 5-point regions (``lavis_ext.describe.regions``); the table says how much of
the attention falls inside each, and ATT-COS, the cosine between the mean attention and the
AUs' merged heatmap. With ``--ann`` the records' images are explained too, and the same
numbers are computed against their labelled AUs (or emotions, through the codebook): the
paper's ATT-COS. Pictures and tables are written atomically, so a stopped run never
leaves a half-written PNG or JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from lavis_ext.describe.faces import (FaceDescriber, WholeImage, alignment_matrix,
                                      open_image, read_caption, template_points,
                                      transform_points)
from lavis_ext.describe.regions import au_region, cosine, cue_aus, heatmap, mass_inside
from lavis_ext.errors import check_partial
from lavis_ext.io import atomic_write, atomic_write_text

if TYPE_CHECKING:  # torch is imported only when a model runs, so --help stays fast
    from lavis_ext.models.attention import AttentionMaps

OVERLAY_ALPHA = 0.5
TILE = 112  # side of one query's tile in the per-query grid picture


@dataclass
class Explanation:
    """One face's caption, attention maps and the numbers that compare them."""

    caption: str
    aus: list[int]
    emotions: list[str]
    cue_aus: list[int]
    cue_source: str  # "caption": its AUs; "codebook": its emotions' AUs; "none"
    landmarks: np.ndarray  # 5 points in the aligned crop
    landmark_source: str  # "mtcnn" (mapped into the crop) or "template" (assumed aligned)
    crop: Image.Image
    maps: AttentionMaps
    heatmap: np.ndarray  # the cue AUs' merged map at crop resolution
    mass: dict[int, float] = field(default_factory=dict)
    att_cos: float | None = None
    # With --ann: the same comparison against the record's labels (the paper's ATT-COS).
    reference: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        grid = self.maps.grid
        table = {"caption": self.caption, "aus": self.aus, "emotions": self.emotions,
                 "cue_aus": self.cue_aus, "cue_source": self.cue_source,
                 "attention_mass": {f"AU{au:02d}": round(m, 4) for au, m in self.mass.items()},
                 "att_cos": _round(self.att_cos)}
        if self.reference is not None:
            table["reference"] = self.reference
        return {**table,
                "landmarks": [[round(float(x), 2), round(float(y), 2)]
                              for x, y in self.landmarks],
                "landmark_source": self.landmark_source,
                "crop_size": list(self.crop.size),
                "grid": {"rows": grid.rows, "cols": grid.cols, "cls": grid.has_cls},
                "queries": int(self.maps.queries.shape[0])}

    def compare_labels(self, aus: Sequence[int], emotions: Sequence[str]) -> None:
        """Fill ``reference``: ATT-COS and masses against the labelled AUs (or, for emotion
        labels, their codebook AUs) instead of the caption's."""
        cues, source = cue_aus(aus, emotions)
        _, mass, cos = compare(self.maps, self.crop.size, self.landmarks, cues)
        self.reference = {
            "aus": list(aus), "emotions": list(emotions), "cue_aus": list(cues),
            "cue_source": {"caption": "labels"}.get(source, source),
            "attention_mass": {f"AU{au:02d}": round(m, 4) for au, m in mass.items()},
            "att_cos": _round(cos)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def crop_landmarks(describer: FaceDescriber, face: Any, crop: Image.Image,
                   ) -> tuple[np.ndarray, str]:
    """The face's 5 points in the crop's pixels, mapped by the same warp as the crop.

    Without detected points (Haar boxes, ``--no-detect``) the crop is taken to be aligned to
    the template, so the template's points stand in for them.
    """
    if face is not None and face.landmarks and describer.detector.name != WholeImage.name:
        matrix = alignment_matrix(face, describer.size, describer.margin)
        return transform_points(face.landmarks, matrix), "mtcnn"
    points = template_points(1, describer.margin)
    return points * np.array(crop.size, dtype=float), "template"


def att_cos(maps: AttentionMaps, cue_map: np.ndarray) -> float | None:
    """ATT-COS at the attention's own resolution: the heatmap is averaged onto the patch
    grid (no detail is invented for the attention by upsampling it)."""
    import cv2

    if not cue_map.any():
        return None
    grid = maps.grid
    small = cv2.resize(cue_map, (grid.cols, grid.rows), interpolation=cv2.INTER_AREA)
    return cosine(maps.mean, small)


def compare(maps: AttentionMaps, size: tuple[int, int], landmarks: np.ndarray,
            cues: Sequence[int]) -> tuple[np.ndarray, dict[int, float], float | None]:
    """The cue AUs' merged heatmap at crop resolution, each AU's share of the attention
    inside its region, and ATT-COS."""
    from lavis_ext.models.attention import upsample

    cue_map = heatmap(cues, landmarks, size)
    attention = upsample(maps.mean, size)
    mass = {au: mass_inside(attention, au_region(au, landmarks, size)) for au in cues}
    return cue_map, mass, att_cos(maps, cue_map)


def explain_crop(crop: Image.Image, caption: str, maps: AttentionMaps,
                 landmarks: np.ndarray, landmark_source: str, face: Any = None) -> Explanation:
    """The numbers for one captioned crop whose attention has been read."""
    described = read_caption(caption, face)
    cues, source = cue_aus(described.aus, described.emotions)
    cue_map, mass, cos = compare(maps, crop.size, landmarks, cues)
    return Explanation(caption, described.aus, described.emotions, list(cues), source,
                       landmarks, landmark_source, crop, maps, cue_map, mass, cos)


def explain_image(image: Image.Image, describer: FaceDescriber,
                  crop_points: np.ndarray | None = None) -> Explanation | None:
    """Explain the largest face of ``image``; ``None`` when no face is found.

    ``crop_points``: ``image`` is already an aligned crop whose 5 points are known (a
    prepared record's ``face_image``), so nothing is detected.
    """
    from lavis_ext.models.attention import CrossAttentionCapture, to_maps, token_grid

    if crop_points is not None:
        face, crop = None, image.convert("RGB")
    else:
        faces = [None] if describer.detector.name == WholeImage.name else \
            describer.detect([image])[0][:1]
        if not faces:
            return None
        face = faces[0]
        crop = describer.crop(image, face)
    model = describer.captioner.model
    with CrossAttentionCapture(model) as capture:
        caption = describer.caption([crop])[0]
    probs = capture.probabilities()[:, :1]  # several captions per image share one pass
    (maps,) = to_maps(probs, token_grid(probs.shape[-1], getattr(model, "visual_encoder", None)))
    if crop_points is not None:
        landmarks, source = np.asarray(crop_points, dtype=float), "record"
    else:
        landmarks, source = crop_landmarks(describer, face, crop)
    return explain_crop(crop, caption, maps, landmarks, source, face)


def explain_images(images: Sequence[Image.Image], describer: FaceDescriber,
                   ) -> list[Explanation | None]:
    """One explanation per image (its largest face), ``None`` where no face is found."""
    return [explain_image(image, describer) for image in images]


def record_crop_points(record: dict[str, Any], crop: Image.Image,
                       margin: float) -> np.ndarray | None:
    """The 5 points inside a prepared record's aligned crop (``prepare --faces align``
    stores them in source pixels, with the box), or ``None`` when the record has no crop."""
    from lavis_ext.describe.faces import Face

    if not record.get("face_image") or not record.get("face_landmarks") or \
            not record.get("face_box"):
        return None
    face = Face(tuple(float(v) for v in record["face_box"]), None,
                [tuple(map(float, p)) for p in record["face_landmarks"]])
    return transform_points(face.landmarks, alignment_matrix(face, crop.width, margin))


# --- Pictures --------------------------------------------------------------------------------

def colorize(values: np.ndarray) -> np.ndarray:
    """An RGB picture of a [0, 1] map (OpenCV's JET colormap; OpenCV is already needed for
    the alignment)."""
    import cv2

    scaled = np.clip(values * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(crop: Image.Image, values: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """A map (any resolution) min-max scaled, coloured and blended over the crop."""
    from lavis_ext.models.attention import upsample
    from lavis_ext.describe.regions import normalise

    resized = upsample(values, crop.size) if values.shape[::-1] != crop.size else values
    colours = colorize(normalise(resized)).astype(np.float32)
    base = np.asarray(crop.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip((1 - alpha) * base + alpha * colours, 0, 255)
                           .astype(np.uint8))


def query_grid(crop: Image.Image, maps: AttentionMaps, tile: int = TILE) -> Image.Image:
    """Every query's map over the crop, tiled row by row (query 0 top left)."""
    count = maps.queries.shape[0]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    small = crop.convert("RGB").resize((tile, tile), Image.BICUBIC)
    sheet = Image.new("RGB", (cols * tile, rows * tile), (0, 0, 0))
    for index, grid_map in enumerate(maps.queries):
        sheet.paste(overlay(small, grid_map), ((index % cols) * tile, (index // cols) * tile))
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def write_outputs(explanation: Explanation, out: Path, stem: str, source: str) -> dict[str, Any]:
    """The overlays, the per-query grid and the JSON table of one image; returns the table."""
    files = {"attention_mean": f"{stem}_attention_mean.png",
             "attention_queries": f"{stem}_attention_queries.png",
             "au_heatmap": f"{stem}_au_heatmap.png", "table": f"{stem}_explain.json"}
    save_png(overlay(explanation.crop, explanation.maps.mean), out / files["attention_mean"])
    save_png(query_grid(explanation.crop, explanation.maps), out / files["attention_queries"])
    save_png(overlay(explanation.crop, explanation.heatmap), out / files["au_heatmap"])
    table = {"image": source, **explanation.to_json(), "files": files}
    atomic_write_text(out / files["table"], json.dumps(table, indent=2) + "\n")
    return table


# --- Command ----------------------------------------------------------------------------------

def _stems(names: Sequence[str]) -> list[str]:
    """File-name stems, safe in one folder and made unique with a counter where two inputs
    share one."""
    seen: dict[str, int] = {}
    stems = []
    for name in names:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem] - 1}")
    return stems


@dataclass
class _Item:
    """One input: a file named on the command line, or a record of --ann."""

    path: Path
    name: str
    record: dict[str, Any] | None = None


def _items(args: argparse.Namespace) -> list[_Item]:
    from lavis_ext.errors import UsageError

    from lavis_ext.describe.cli import IMAGE_EXTS

    items = []
    for raw in args.paths:
        path = Path(raw)
        if path.is_dir():  # its images, recursively, as describe finds them (no videos)
            items += [_Item(child, str(child.relative_to(path).with_suffix("")))
                      for child in sorted(path.rglob("*"))
                      if child.is_file() and child.suffix.lower() in IMAGE_EXTS]
        else:
            items.append(_Item(path, path.stem))
    if args.ann:
        from lavis_ext.data.records import image_file, load_records

        if not args.images:
            raise UsageError("--ann needs --images, the root its image paths are relative to")
        items += [_Item(image_file(r, args.images), str(r["image_id"]), r)
                  for r in load_records(args.ann)]
    elif args.images:
        raise UsageError("--images is the root of --ann's records; name images as arguments")
    if not items:
        raise UsageError("nothing to explain: name images, or records with --ann")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lavis_ext.describe.cli import add_face_arguments

    parser.add_argument("paths", nargs="*", help="images or folders of images (the largest "
                                                 "face of each is explained)")
    parser.add_argument("--model", default="exp_blip",
                        help="training checkpoint (.pth) or ARCH[:MODEL_TYPE], as for describe")
    parser.add_argument("--out", required=True,
                        help="folder for the overlays, per-query grids and JSON tables")
    parser.add_argument("--ann", metavar="RECORDS",
                        help="also explain these records' images and compare the attention "
                             "with their labelled AUs (or emotions): the paper's ATT-COS")
    parser.add_argument("--images", metavar="ROOT",
                        help="the images root of --ann (records' paths are relative to it)")
    add_face_arguments(parser, "treat each image as one aligned face crop (the AU regions "
                               "then come from the alignment template's 5 points)")


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def run(args: argparse.Namespace) -> int:
    from lavis_ext.data.records import present_aus
    from lavis_ext.describe.cli import build_describer, map_heap_for_model

    items = _items(args)
    describer = build_describer(args, batch_size=1)
    map_heap_for_model(describer, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for item, stem in zip(items, _stems([i.name for i in items])):
        try:
            image = open_image(item.path)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the rest
            failures.append((str(item.path), f"unreadable: {type(err).__name__}: {err}"))
            continue
        points = None if item.record is None else record_crop_points(
            item.record, image, describer.margin)
        explanation = explain_image(image, describer, points)
        if explanation is None:
            failures.append((str(item.path), "no face detected"))
            continue
        if item.record is not None:
            explanation.compare_labels(present_aus(item.record), item.record["emotions"])
        table = write_outputs(explanation, out, stem, str(item.path))
        row = {k: table[k] for k in ("image", "caption", "cue_aus", "att_cos")}
        if item.record is not None:
            row.update(image_id=item.record["image_id"],
                       reference_att_cos=table["reference"]["att_cos"])
        summary.append(row)
    report = {"model": args.model, "detector": describer.detector.name, "images": summary,
              "failures": [{"image": f, "error": e} for f, e in failures],
              "mean_att_cos": _mean([r["att_cos"] for r in summary])}
    if args.ann:
        report["mean_reference_att_cos"] = _mean([r.get("reference_att_cos") for r in summary])
    atomic_write_text(out / "explain_summary.json", json.dumps(report, indent=2) + "\n")
    means = [f"mean ATT-COS {report['mean_att_cos']} (caption)"] \
        if report["mean_att_cos"] is not None else []
    if report.get("mean_reference_att_cos") is not None:
        means.append(f"{report['mean_reference_att_cos']} (labels)")
    print(f"explained {len(summary)} of {len(items)} images -> {out}"
          + (f"; {', '.join(means)}" if means else ""))
    for file, error in failures:
        print(f"  {file}: {error}", file=sys.stderr)
    return check_partial("explain", len(summary), len(failures), "images")
