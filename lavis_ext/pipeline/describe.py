"""``expblip describe``: describe the faces in photos, folders and videos.

Faces are found with OpenCV's bundled Haar cascade (offline; its XML ships in the OpenCV
wheel) and cropped square with a margin; ``--no-detect`` takes the images as aligned crops.
Each row names the file, frame, face box, the caption, and the AUs and emotions read back
from the caption. A file that cannot be read is reported in its row and the rest go on.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from lavis_ext.data.records import atomic_write_text

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class Row:
    file: str
    frame: int | None = None
    box: list[int] | None = None  # x, y, w, h in the original image
    caption: str | None = None
    aus: list[int] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)
    error: str | None = None


class FaceDetector:
    """OpenCV's frontal-face Haar cascade; returns square boxes with a margin, largest first."""

    def __init__(self, min_size: int = 40, margin: float = 0.25):
        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV face cascade could not be loaded from {path}")
        self.min_size, self.margin = min_size, margin

    def __call__(self, image: Image.Image) -> list[list[int]]:
        import cv2

        gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
        found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(self.min_size, self.min_size))
        boxes = []
        for x, y, w, h in sorted((tuple(map(int, b)) for b in found),
                                 key=lambda b: -b[2] * b[3]):
            side = int(max(w, h) * (1 + 2 * self.margin))
            cx, cy = x + w // 2, y + h // 2
            left = max(0, min(cx - side // 2, image.width - side))
            top = max(0, min(cy - side // 2, image.height - side))
            side = min(side, image.width, image.height)
            boxes.append([left, top, side, side])
        return boxes


def iter_inputs(paths: list[str]) -> Iterator[Path]:
    """Files named, and the image/video files inside folders named (sorted, recursive)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                    yield child
        else:
            yield path


def iter_frames(path: Path, stride: int) -> Iterator[tuple[int | None, Image.Image]]:
    """(frame index or None, image) for an image file, or every ``stride``-th video frame."""
    if path.suffix.lower() in VIDEO_EXTS:
        import decord

        reader = decord.VideoReader(str(path))
        for index in range(0, len(reader), max(1, stride)):
            frame = reader[index]  # LAVIS switches decord's bridge to torch on import
            array = frame.asnumpy() if hasattr(frame, "asnumpy") else frame.numpy()
            yield index, Image.fromarray(array)
    else:
        with Image.open(path) as img:
            yield None, img.convert("RGB")


def describe(paths: list[str], captioner: Any, *, detect: bool = True, stride: int = 30,
             batch_size: int = 16, max_faces: int = 5, progress: bool = True,
             detector: FaceDetector | None = None) -> list[Row]:
    """Rows for every face (or every image, with ``detect=False``) in ``paths``."""
    from lavis_ext.metrics.recognition import parse_caption

    detector = detector or (FaceDetector() if detect else None)
    rows: list[Row] = []
    pending: list[tuple[Row, Image.Image]] = []

    def flush() -> None:
        captions = captioner.caption([crop for _, crop in pending])
        for (row, _), text in zip(pending, captions):
            parsed = parse_caption(text)
            row.caption, row.aus, row.emotions = text, sorted(parsed.aus), sorted(
                parsed.emotions)
        pending.clear()

    files = list(iter_inputs(paths))
    for path in tqdm(files, desc="describe", disable=not progress):
        try:
            if not path.exists():
                raise FileNotFoundError("no such file")
            for frame, image in iter_frames(path, stride):
                boxes = detector(image)[:max_faces] if detector else [
                    [0, 0, image.width, image.height]]
                if not boxes:
                    rows.append(Row(str(path), frame, error="no face detected"))
                for box in boxes:
                    x, y, w, h = box
                    row = Row(str(path), frame, box)
                    rows.append(row)
                    pending.append((row, image.crop((x, y, x + w, y + h))))
                    if len(pending) >= batch_size:
                        flush()
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the rest
            rows.append(Row(str(path), error=f"unreadable: {type(err).__name__}: {err}"))
    if pending:
        flush()
    return rows


def write_rows(rows: list[Row], out: str) -> None:
    """JSONL (one object per row) or CSV, chosen by the file extension; written atomically."""
    if out.endswith(".csv"):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(Row.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            data = asdict(row)
            data["box"] = " ".join(map(str, row.box)) if row.box else ""
            data["aus"] = " ".join(map(str, row.aus))
            data["emotions"] = " ".join(row.emotions)
            writer.writerow(data)
        atomic_write_text(out, buffer.getvalue())
    else:
        atomic_write_text(out, "".join(json.dumps(asdict(r)) + "\n" for r in rows))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="images, folders or videos")
    parser.add_argument("--model", default="exp_blip",
                        help="training checkpoint (.pth) or ARCH[:MODEL_TYPE] (default: the "
                             "released Exp-BLIP, 'exp_blip', whose checkpoint you configure)")
    parser.add_argument("--out", default="descriptions.jsonl", help=".jsonl or .csv")
    parser.add_argument("--no-detect", action="store_true",
                        help="treat each image or frame as one aligned face crop")
    parser.add_argument("--stride", type=int, default=30, help="video: every N-th frame")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-faces", type=int, default=5)
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from lavis_ext.pipeline.captioner import load_captioner

    captioner = load_captioner(args.model, args.device)
    rows = describe(args.paths, captioner, detect=not args.no_detect, stride=args.stride,
                    batch_size=args.batch_size, max_faces=args.max_faces)
    write_rows(rows, args.out)
    described = sum(1 for r in rows if r.caption)
    failed = [r for r in rows if r.error]
    print(f"described {described} faces in {len({r.file for r in rows})} files -> {args.out}")
    for row in failed:
        print(f"  {row.file}" + (f" frame {row.frame}" if row.frame is not None else "")
              + f": {row.error}")
    return 0
