"""`expblip prepare ... --faces align`: each record's face found and aligned once, cached.

Training then sees what ``describe`` and ``serve`` feed the model: the same detector
(``faces.load_detector``, MTCNN by default) and the same 5-point alignment
(``faces.align``). A record that already carries its dataset's own face (AffectNet:
``face_box``, and ``face_landmarks`` derived from its 68 points) is aligned from that, and no
detector runs for it.

Crops go to ``<out>/faces/<image path>.png`` (the source path, extension kept, so the name is
stable and unique), written atomically with their face and settings in a PNG text chunk, so a
rerun reuses every crop made with the same settings and only aligns what is left. Frames
without a face are remembered in ``<out>/faces/not_found.json`` (same settings: not detected
again). A face that is not found is counted by reason and its record is left out of the
split: never a whole-frame fallback, which would train on what inference never sees.

This module sits above ``lavis_ext.data`` (it needs torch through the detector);
``lavis_ext.data.prepare`` receives it as an object and never imports it unless ``--faces``
is given.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from PIL import Image, PngImagePlugin

from lavis_ext.data.records import Record
from lavis_ext.describe.faces import DETECTORS, Detector, Face, align, load_detector, open_image
from lavis_ext.errors import UsageError
from lavis_ext.io import atomic_write, atomic_write_text

CROP_DIR = "faces"
NOT_FOUND_FILE = "not_found.json"
META_KEY = "lavis_ext.face"
MISSING, UNREADABLE, NO_FACE = "image file missing", "unreadable image", "no face found"
EXAMPLES = 5


@dataclass(frozen=True)
class FaceSettings:
    """What a crop depends on; a cached crop made with other settings is made again."""

    detector: str = "mtcnn"
    min_confidence: float = 0.9
    min_face: int = 20
    size: int = 224
    margin: float = 0.2

    def check(self) -> None:
        # `auto` would fall back to the Haar cascade silently: training data must say which.
        if self.detector not in DETECTORS or self.detector == "auto":
            raise UsageError(f"--detector {self.detector!r}: expected mtcnn or haar")
        if self.size < 16:
            raise UsageError(f"--align-size {self.size}: expected at least 16 pixels")
        if not 0.0 <= self.margin <= 2.0:
            raise UsageError(f"--align-margin {self.margin}: expected a fraction in [0, 2]")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence {self.min_confidence}: expected a value in "
                             "[0, 1]")
        if self.min_face < 1:
            raise UsageError(f"--min-face {self.min_face}: expected at least 1 pixel")


def crop_name(image: str) -> str:
    """The crop's path under ``faces/``: the source path plus ``.png`` (a hash for a path
    that would leave the folder)."""
    path = PurePosixPath(image.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return f"_hashed/{hashlib.sha1(image.encode()).hexdigest()[:20]}.png"
    return f"{path}.png"


def _round_box(box: Sequence[float]) -> list[float]:
    return [round(float(v), 2) for v in box]


def _round_points(points: Sequence[Sequence[float]] | None) -> list[list[float]] | None:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points] if points else None


def _read_crop_meta(path: Path) -> dict[str, Any] | None:
    """The face stored in a cached crop, or None when there is no usable crop."""
    try:
        with Image.open(path) as img:
            text = img.info.get(META_KEY)
            size = img.size
    except (OSError, ValueError):
        return None
    try:
        meta = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
        return None
    side = meta["settings"].get("size")
    return meta if size == (side, side) else None


def _reusable(meta: dict[str, Any], record: Record, settings: dict[str, Any]) -> bool:
    """A cached crop fits when it is of this image, made with these settings, and from the
    record's own face when it has one (from the detector when it has none)."""
    if meta.get("image") != record["image"] or meta.get("settings") != settings:
        return False
    if record.get("face_box") is None:
        return meta.get("source") != "dataset"
    return meta.get("source") == "dataset" and meta.get("face_box") == _round_box(
        record["face_box"]) and meta.get("face_landmarks") == _round_points(
        record.get("face_landmarks"))


class FacePreparer:
    """Aligns the faces of a list of records; ``detector`` is loaded on first need."""

    def __init__(self, settings: FaceSettings = FaceSettings(),
                 detector: Detector | None = None, batch_size: int = 8,
                 device: str = "cpu") -> None:
        """``batch_size``: images per detector call (MTCNN batches equal-sized frames);
        ``device``: where MTCNN runs (``cuda`` for large video sets; crops do not depend
        on it)."""
        settings.check()
        self.settings, self._detector, self.device = settings, detector, device
        self.batch_size = max(1, int(batch_size))

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            s = self.settings
            self._detector = load_detector(s.detector, min_confidence=s.min_confidence,
                                           min_face=s.min_face, device=self.device)
        return self._detector

    def prepare(self, records: list[Record], root: str | Path, out: str | Path, *,
                progress: bool = True) -> tuple[list[Record], dict[str, Any]]:
        """Records whose face was aligned (with ``face_box``, ``face_landmarks``,
        ``face_image``), in their order, and a summary: aligned by source, not found by
        reason with examples, crops/s."""
        from tqdm import tqdm

        started = time.perf_counter()
        root, crops = Path(root), Path(out) / CROP_DIR
        settings = asdict(self.settings)
        not_found_path = crops / NOT_FOUND_FILE
        known_misses = self._load_misses(not_found_path, settings)
        misses: dict[str, str] = {}
        counts: Counter[str] = Counter()
        lost: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        done: dict[int, Record] = {}
        todo: list[int] = []
        several = 0

        def miss(index: int, reason: str, detail: str = "") -> None:
            lost[reason] += 1
            shown = examples.setdefault(reason, [])
            if len(shown) < EXAMPLES:
                shown.append(f"{root / records[index]['image']}{detail}")
            if reason == NO_FACE:
                misses[records[index]["image"]] = reason

        bar = tqdm(total=len(records), desc="aligning faces", unit="image",
                   disable=not progress)
        for index, record in enumerate(records):
            path = crops / crop_name(record["image"])
            meta = _read_crop_meta(path) if path.is_file() else None
            if meta is not None and _reusable(meta, record, settings):
                done[index] = self._with_face(record, meta["face_box"],
                                              meta.get("face_landmarks"), path)
                counts["reused"] += 1
                bar.update()
            elif record["image"] in known_misses:
                miss(index, NO_FACE)
                bar.update()
            else:
                todo.append(index)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            images: dict[int, Image.Image] = {}
            for index in chunk:
                source = root / records[index]["image"]
                try:
                    images[index] = open_image(source)
                except FileNotFoundError:
                    miss(index, MISSING)
                except (OSError, ValueError, Image.DecompressionBombError) as err:
                    miss(index, UNREADABLE, f" ({err})")
            own = [i for i in images if records[i].get("face_box") is not None]
            to_detect = [i for i in images if records[i].get("face_box") is None]
            faces: dict[int, tuple[Face, str]] = {}
            for index in own:
                record = records[index]
                points = record.get("face_landmarks")
                faces[index] = (Face(tuple(record["face_box"]), None,
                                     [tuple(p) for p in points] if points else None), "dataset")
            if to_detect:
                found = self.detector.detect([images[i] for i in to_detect])
                for index, candidates in zip(to_detect, found):
                    if not candidates:
                        miss(index, NO_FACE)
                        continue
                    if len(candidates) > 1:
                        several += 1
                    faces[index] = (candidates[0], self.detector.name)
            for index in chunk:
                if index not in faces:
                    continue
                face, source = faces[index]
                record = records[index]
                path = crops / crop_name(record["image"])
                box, points = _round_box(face.box), _round_points(face.landmarks)
                meta = {"image": record["image"], "source": source, "face_box": box,
                        "face_landmarks": points, "confidence": face.confidence,
                        "settings": settings}
                crop = align(images[index], face, self.settings.size, self.settings.margin)
                self._write_crop(path, crop, meta)
                done[index] = self._with_face(record, box, points, path)
                counts["detected" if source != "dataset" else "from the dataset's face box"] += 1
            bar.update(len(chunk))
            if misses and (start // self.batch_size) % 50 == 49:
                self._save_misses(not_found_path, settings, known_misses, misses)
        bar.close()
        self._save_misses(not_found_path, settings, known_misses, misses)
        seconds = time.perf_counter() - started
        made = counts["detected"] + counts["from the dataset's face box"]
        summary = {
            "aligned": len(done), "by_source": dict(counts), "not_found": dict(lost),
            "not_found_examples": examples,
            "several_faces_largest_kept": several, "crops": str(crops), "settings": settings,
            "seconds": round(seconds, 3),
            "crops_per_second": round(made / seconds, 2) if made and seconds > 0 else None,
        }
        return [done[i] for i in sorted(done)], summary

    @staticmethod
    def _with_face(record: Record, box: list[float], points: list[list[float]] | None,
                   path: Path) -> Record:
        return dict(record, face_box=box, face_landmarks=points,
                    face_image=str(path.resolve()))

    @staticmethod
    def _write_crop(path: Path, crop: Image.Image, meta: dict[str, Any]) -> None:
        info = PngImagePlugin.PngInfo()
        info.add_text(META_KEY, json.dumps(meta))
        atomic_write(path, lambda handle: crop.save(handle, format="PNG", pnginfo=info))

    @staticmethod
    def _load_misses(path: Path, settings: dict[str, Any]) -> dict[str, str]:
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        if not isinstance(data, dict) or data.get("settings") != settings:
            return {}
        return dict(data.get("images") or {})

    @staticmethod
    def _save_misses(path: Path, settings: dict[str, Any], known: dict[str, str],
                     found: dict[str, str]) -> None:
        images = {**known, **found}
        if images or path.is_file():
            atomic_write_text(path, json.dumps({"settings": settings, "images": images},
                                               indent=1) + "\n")


def format_summary(summary: dict[str, Any]) -> list[str]:
    """The lines ``expblip prepare`` prints after aligning."""
    sources = ", ".join(f"{n} {what}" for what, n in summary["by_source"].items()) or "none"
    rate = summary["crops_per_second"]
    lines = [f"  faces: {summary['aligned']} aligned ({sources}) in {summary['seconds']:.1f} s"
             + (f", {rate:.2f} crops/s" if rate else "") + f"; crops in {summary['crops']}"]
    lost = summary["not_found"]
    lines.append(f"  faces not found: {sum(lost.values())}" + (
        " (" + ", ".join(f"{n} {reason}" for reason, n in lost.items()) + "); their records "
        "are left out of the split" if lost else ""))
    for reason, shown in summary["not_found_examples"].items():
        lines.append(f"    {reason}: e.g. {shown[0]}")
    return lines
