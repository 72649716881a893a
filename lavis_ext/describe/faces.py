"""Find faces with 5 landmarks and align them the way the training datasets' crops are aligned.

MTCNN (``facenet-pytorch``; its P/R/O-Net weights ship inside the wheel, so it works offline)
gives a box, a confidence and 5 points per face: the two eye centres, the nose tip and the two
mouth corners, in the image's left-to-right order. Each face is then warped with the
similarity transform (rotation, uniform scale, shift) that best maps its 5 points onto a
canonical template, as RAF-DB's and AffectNet's aligned crops are made. When facenet-pytorch is
not installed, OpenCV's Haar cascade is the fallback: it gives boxes only (no points, no
confidence), so its faces are cropped square around the box instead of aligned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import numpy as np
from PIL import Image

from lavis_ext.errors import InputError, UsageError

# The 5-point template of face-recognition crops (ArcFace's 112x112 reference: eyes, nose tip,
# mouth corners), divided by 112 so that it describes a tight face square of side 1.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0
DETECTORS = ("auto", "mtcnn", "haar")


@dataclass
class Face:
    """One detected face; ``box`` is (x, y, w, h) in image pixels."""

    box: tuple[float, float, float, float]
    confidence: float | None = None
    landmarks: list[tuple[float, float]] | None = None  # 5 (x, y) points, or None (Haar)


class Detector(Protocol):
    name: str

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """Faces per image, largest first."""


def _keep(faces: Iterable[Face], min_face: int, min_confidence: float) -> list[Face]:
    kept = [f for f in faces if min(f.box[2], f.box[3]) >= min_face
            and (f.confidence is None or f.confidence >= min_confidence)]
    return sorted(kept, key=lambda f: -f.box[2] * f.box[3])


class MTCNNDetector:
    """facenet-pytorch's MTCNN; equal-sized images (video frames) run as one batch."""

    name = "mtcnn"

    def __init__(self, min_confidence: float = 0.9, min_face: int = 20, device: str = "cpu"):
        from facenet_pytorch import MTCNN

        # MTCNN's image pyramid starts at 12 / min_face_size, so a larger --min-face is faster.
        self.model = MTCNN(keep_all=True, min_face_size=max(12, int(min_face)), device=device)
        self.min_confidence, self.min_face = min_confidence, min_face

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for indices in by_size.values():
            batch = [images[i].convert("RGB") for i in indices]
            boxes, probs, points = self.model.detect(batch, landmarks=True)
            for i, b, p, lm in zip(indices, boxes, probs, points):
                if b is None:
                    continue
                # facenet-pytorch returns object arrays on numpy 1.x; make them numeric.
                b, p = np.asarray(b, dtype=float), np.asarray(p, dtype=float)
                lm = np.asarray(lm, dtype=float)
                faces = [Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                              float(prob), [(float(x), float(y)) for x, y in pts])
                         for (x0, y0, x1, y1), prob, pts in zip(b, p, lm)]
                results[i] = _keep(faces, self.min_face, self.min_confidence)
        return results


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (in the OpenCV wheel): boxes only."""

    name = "haar"

    def __init__(self, min_confidence: float = 0.0, min_face: int = 40):
        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV face cascade could not be loaded from {path}")
        self.min_face = min_face

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        import cv2

        results = []
        for image in images:
            gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
            found = self.cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5,
                minSize=(max(1, self.min_face), max(1, self.min_face)))
            faces = [Face(tuple(float(v) for v in b)) for b in found]
            results.append(_keep(faces, self.min_face, 0.0))
        return results


class WholeImage:
    """``--no-detect``: each image (or frame) is already one aligned face crop."""

    name = "none"

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        return [[Face((0.0, 0.0, float(img.width), float(img.height)))] for img in images]


def load_detector(kind: str = "auto", *, min_confidence: float = 0.9, min_face: int = 20,
                  device: str = "cpu") -> Detector:
    """``auto`` is MTCNN when facenet-pytorch is installed, else the Haar cascade."""
    if kind not in DETECTORS:
        raise UsageError(f"--detector {kind!r}: expected one of {', '.join(DETECTORS)}")
    if not 0.0 <= min_confidence <= 1.0:
        raise UsageError(f"--min-confidence {min_confidence}: expected a value in [0, 1]")
    if min_face < 1:
        raise UsageError(f"--min-face {min_face}: expected a face size of at least 1 pixel")
    if kind in ("auto", "mtcnn"):
        try:
            import facenet_pytorch  # noqa: F401
        except ImportError:
            if kind == "mtcnn":
                raise UsageError("--detector mtcnn needs facenet-pytorch: pip install "
                                 "--no-deps facenet-pytorch==2.6.0 (see docs/describe.md)")
        else:
            return MTCNNDetector(min_confidence, min_face, device)
    return HaarDetector(min_confidence, min_face)


class TooManyPixels(InputError):
    """An image larger than the caller allows (checked from the header, before decoding)."""


class _EndWatch:
    """A read-only binary stream that notes a read at its end while ``watching`` is set.

    PIL's decoders stop reading once the image is complete, so a read that finds no bytes
    while the pixels are decoded means the file ends before the image does. This is how a
    truncated file is told apart whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says: LAVIS
    sets that process-wide flag on import (a cut-off JPEG then loads with a grey lower half),
    and toggling it here would change it for every other thread.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.watching = False
        self.hit_end = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self.watching and not data and size != 0:
            self.hit_end = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readline(self, size: int = -1) -> bytes:
        return self._raw.readline(size)


def open_image(source: Any, max_pixels: int | None = None) -> Image.Image:
    """An RGB image, upright per its EXIF orientation; a truncated file raises ``OSError``.

    ``source``: a path or a binary file object. Truncation is detected from the stream (see
    ``_EndWatch``), never by changing PIL's global ``LOAD_TRUNCATED_IMAGES``.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _open_stream(handle, max_pixels, str(source))
    return _open_stream(source, max_pixels, getattr(source, "name", None) or "the image")


def _open_stream(handle: Any, max_pixels: int | None, name: str) -> Image.Image:
    from PIL import ImageOps

    stream = _EndWatch(handle)
    with Image.open(stream) as img:
        pixels = img.width * img.height
        if max_pixels is not None and pixels > max_pixels:
            raise TooManyPixels(f"the image is {img.width}x{img.height} = {pixels} pixels, "
                                f"over the limit of {max_pixels}")
        stream.watching = True
        img.load()
        stream.watching = False
        if stream.hit_end:
            raise OSError(f"image file is truncated: {name} ends before its {img.format} "
                          "data does")
        return ImageOps.exif_transpose(img).convert("RGB")


def template_points(size: int, margin: float) -> np.ndarray:
    """Where the 5 points land in a ``size`` crop whose face square has ``margin`` per side."""
    return (TEMPLATE + margin) / (1.0 + 2.0 * margin) * size


def alignment_matrix(face: Face, size: int = 224, margin: float = 0.2) -> np.ndarray:
    """The 2x3 affine matrix that ``align`` warps with: image pixels -> crop pixels.

    With 5 landmarks it is the similarity transform onto the template; without (Haar boxes,
    or when the estimate fails) a scale and shift that centres a square around the box.
    Callers that draw on the crop (``expblip explain``'s AU regions) map the face's points
    with it, so the crop and what is drawn on it cannot disagree.
    """
    return _alignment(face, size, margin)[0]


def _alignment(face: Face, size: int, margin: float) -> tuple[np.ndarray, bool]:
    """(matrix, whether it came from the landmarks)."""
    if face.landmarks and len(face.landmarks) == 5:
        from skimage.transform import SimilarityTransform

        transform = SimilarityTransform()
        if transform.estimate(np.asarray(face.landmarks, dtype=float),
                              template_points(size, margin)):
            return np.asarray(transform.params[:2], dtype=float), True
    # Boxes from the cascade: a square around the box, the same margin per side.
    x, y, w, h = face.box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    scale = size / side
    return np.array([[scale, 0.0, size / 2.0 - scale * cx],
                     [0.0, scale, size / 2.0 - scale * cy]]), False


def transform_points(points: Sequence[Sequence[float]], matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 2x3 affine matrix."""
    array = np.asarray(points, dtype=float).reshape(-1, 2)
    return array @ matrix[:, :2].T + matrix[:, 2]


def align(image: Image.Image, face: Face, size: int = 224, margin: float = 0.2) -> Image.Image:
    """The face warped onto the template (or, without landmarks, a square crop of its box)."""
    import cv2

    array = np.asarray(image.convert("RGB"))
    matrix, from_landmarks = _alignment(face, size, margin)
    flags = cv2.INTER_AREA if not from_landmarks and matrix[0, 0] < 1 else cv2.INTER_LINEAR
    warped = cv2.warpAffine(array, matrix, (size, size), flags=flags,
                            borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(warped)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0.0, min(ax1, bx1) - max(a[0], b[0])) * max(0.0, min(ay1, by1) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class DescribedFace:
    face: Face
    caption: str
    aus: list[int]
    negated_aus: list[int]
    emotions: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"box": [round(v, 2) for v in self.face.box],
                "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.face.landmarks]
                if self.face.landmarks else None,
                "confidence": self.face.confidence, "caption": self.caption,
                "aus": self.aus, "emotions": self.emotions}


def read_caption(caption: str, face: Face) -> DescribedFace:
    """The AUs (present and said to be absent) and emotions a caption names."""
    from lavis_ext.metrics.recognition import parse_caption

    parsed = parse_caption(caption)
    return DescribedFace(face, caption, sorted(parsed.aus), sorted(parsed.negated_aus),
                         sorted(parsed.emotions))


class FaceDescriber:
    """Detector + alignment + captioner: what ``describe`` and ``serve`` share."""

    def __init__(self, captioner: Any, detector: Detector, *, size: int = 224,
                 margin: float = 0.2, max_faces: int = 5, batch_size: int = 16,
                 generation: dict[str, Any] | None = None):
        if size < 16:
            raise UsageError(f"--align-size {size}: expected at least 16 pixels")
        if not 0.0 <= margin <= 2.0:
            raise UsageError(f"--align-margin {margin}: expected a fraction in [0, 2]")
        self.captioner, self.detector = captioner, detector
        self.size, self.margin, self.max_faces = size, margin, max_faces
        self.batch_size = max(1, batch_size)
        self.generation = {k: v for k, v in (generation or {}).items() if v is not None}

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        return [faces[:self.max_faces] for faces in self.detector.detect(images)]

    def crop(self, image: Image.Image, face: Face | None) -> Image.Image:
        """The aligned face; ``None`` (or ``--no-detect``): the image is already a crop."""
        if face is None or self.detector.name == WholeImage.name:
            return image.convert("RGB")
        return align(image, face, self.size, self.margin)

    def caption(self, crops: Sequence[Image.Image]) -> list[str]:
        """Captions in model batches of at most ``batch_size``; one caption per crop."""
        captions: list[str] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = list(crops[start:start + self.batch_size])
            out = self.captioner.caption(chunk, **self.generation)
            if len(out) != len(chunk):
                raise RuntimeError(f"the captioner returned {len(out)} captions for "
                                   f"{len(chunk)} faces")
            captions.extend(out)
        return captions

    def describe(self, images: Sequence[Image.Image],
                 aligned: Sequence[bool] | None = None) -> list[list[DescribedFace]]:
        """Every face of every image, described; the whole list shares model batches.

        ``aligned[i]``: image i is already an aligned face crop (no detection; one face).
        """
        aligned = list(aligned or [False] * len(images))
        to_detect = [i for i, done in enumerate(aligned) if not done]
        detected = iter(self.detect([images[i] for i in to_detect]) if to_detect else [])
        found: list[list[Face]] = []
        crops = []
        for image, whole in zip(images, aligned):
            if whole:
                found.append([WholeImage().detect([image])[0][0]])
                crops.append(self.crop(image, None))
            else:
                found.append(next(detected))
                crops.extend(self.crop(image, face) for face in found[-1])
        captions = iter(self.caption(crops))
        return [[read_caption(next(captions), face) for face in faces] for faces in found]
