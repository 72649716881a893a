"""Where each action unit shows on a face, from the 5 MTCNN landmarks, as heatmaps.

The spatial AU cues of Belharbi et al. (FG 2024; ``shared/facts/seed-systems.md``) place filled
ellipses at centres taken from 68 landmarks. Only MTCNN's 5 points (the two eye centres, the
nose tip, the two mouth corners, in the image's left-to-right order) are available here: no
68-point model ships in the registries this project relies on. So every centre is derived from
the 5 points in a face frame: ``u`` runs from the image-left eye to the other eye, ``v`` is
perpendicular to it pointing down the face, and sizes are fractions of the inter-ocular
distance ``d``. The regions therefore follow the face's position, scale and roll, and are
coarser than the 68-point ones (brows, cheeks and chin are guessed from the eyes and mouth
rather than seen).

An AU's map is its filled ellipses, resized to 28 x 28, box-blurred 3 x 3 and resized back;
several AUs merge by pixel-wise max, then min-max normalisation to [0, 1], as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from lavis_ext.errors import InputError
from lavis_ext.facs import ACTION_UNITS, AU_CUE_CODEBOOK, canonical_emotion

BLUR_SIZE = 28  # the map is blurred at this resolution, as in the paper
BLUR_KERNEL = 3


@dataclass(frozen=True)
class Ellipse:
    """A filled ellipse in pixels: centre (x, y), semi-axes along the face's u and v axes."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float  # degrees, the roll of the face (the u axis) in the image


class FaceFrame:
    """The 5 points and the face's own axes, for placing regions relative to them."""

    def __init__(self, points: Sequence[Sequence[float]]):
        array = np.asarray(points, dtype=float)
        if array.shape != (5, 2):
            raise InputError(f"expected 5 (x, y) landmarks, got an array of {array.shape}")
        self.left_eye, self.right_eye, self.nose, self.mouth_left, self.mouth_right = array
        across = self.right_eye - self.left_eye
        self.d = float(np.hypot(*across))
        if self.d <= 1e-6:
            raise InputError("the two eye landmarks coincide: no face frame")
        self.u = across / self.d
        self.v = np.array([-self.u[1], self.u[0]])  # u turned 90 degrees: down the face
        self.angle = float(np.degrees(np.arctan2(self.u[1], self.u[0])))
        self.eyes = (self.left_eye + self.right_eye) / 2
        self.mouth = (self.mouth_left + self.mouth_right) / 2
        self.mouth_width = float(np.hypot(*(self.mouth_right - self.mouth_left)))

    def at(self, origin: np.ndarray, along: float = 0.0, down: float = 0.0) -> np.ndarray:
        """``origin`` moved ``along`` d towards the image-right eye and ``down`` d down."""
        return origin + self.d * (along * self.u + down * self.v)

    def ellipse(self, centre: np.ndarray, a: float, b: float) -> Ellipse:
        """An ellipse with semi-axes ``a`` d (along u) and ``b`` d (along v)."""
        return Ellipse((float(centre[0]), float(centre[1])), (a * self.d, b * self.d),
                       self.angle)


def _brows(f: FaceFrame, where: str) -> list[Ellipse]:
    inward = {"inner": 0.2, "outer": -0.25}[where]
    return [f.ellipse(f.at(f.left_eye, inward, -0.45), 0.2, 0.14),
            f.ellipse(f.at(f.right_eye, -inward, -0.45), 0.2, 0.14)]


def _eyes(f: FaceFrame) -> list[Ellipse]:
    return [f.ellipse(f.left_eye, 0.28, 0.15), f.ellipse(f.right_eye, 0.28, 0.15)]


def _corners(f: FaceFrame, down: float = 0.0, inward: float = 0.0,
             radius: float = 0.22) -> list[Ellipse]:
    return [f.ellipse(f.at(f.mouth_left, inward, down), radius, radius),
            f.ellipse(f.at(f.mouth_right, -inward, down), radius, radius)]


def _mouth(f: FaceFrame, down: float = 0.0, height: float = 0.22) -> list[Ellipse]:
    half = f.mouth_width / (2 * f.d) + 0.1
    return [f.ellipse(f.at(f.mouth, 0.0, down), half, height)]


def au_ellipses(au: int, points: Sequence[Sequence[float]]) -> list[Ellipse]:
    """The ellipses of one AU for a face's 5 points (every AU of ``facs.ACTION_UNITS``)."""
    f = FaceFrame(points)
    nose_bridge = (f.eyes + f.nose) / 2
    builders = {
        1: lambda: _brows(f, "inner"),
        2: lambda: _brows(f, "outer"),
        4: lambda: [f.ellipse(f.at(f.eyes, 0.0, -0.38), 0.35, 0.14)],  # between the brows
        5: lambda: _eyes(f), 7: lambda: _eyes(f), 43: lambda: _eyes(f),
        6: lambda: [f.ellipse(f.at(f.left_eye, -0.05, 0.45), 0.22, 0.18),
                    f.ellipse(f.at(f.right_eye, 0.05, 0.45), 0.22, 0.18)],
        9: lambda: [f.ellipse(nose_bridge, 0.22, 0.2)],
        10: lambda: [f.ellipse((f.nose + f.mouth) / 2, 0.35, 0.12)],
        11: lambda: [f.ellipse(f.at((f.nose + f.mouth_left) / 2, -0.12), 0.12, 0.22),
                     f.ellipse(f.at((f.nose + f.mouth_right) / 2, 0.12), 0.12, 0.22)],
        12: lambda: _corners(f), 14: lambda: _corners(f), 15: lambda: _corners(f),
        16: lambda: _corners(f, down=0.15, inward=0.15, radius=0.18),
        17: lambda: [f.ellipse(f.at(f.mouth, 0.0, 0.6), 0.35, 0.25)],
        20: lambda: _corners(f, down=0.3, inward=-0.1, radius=0.2),
        21: lambda: [f.ellipse(f.at(f.mouth, 0.0, 1.15), 0.5, 0.25)],
        # The upper and lower lip centres (overlapping: the gap between them is the cue).
        25: lambda: [f.ellipse(f.at(f.mouth, 0.0, -0.08), 0.3, 0.12),
                     f.ellipse(f.at(f.mouth, 0.0, 0.08), 0.3, 0.12)],
        26: lambda: _mouth(f, down=0.15, height=0.35),
        27: lambda: _mouth(f, down=0.15, height=0.35),
    }
    if au in builders:
        return builders[au]()
    if au in ACTION_UNITS and ACTION_UNITS[au].region == "mouth":
        return _mouth(f)  # lip shapes (8, 18, 19, 22, 23, 24, 28): the mouth box
    raise InputError(f"AU {au} has no spatial region (known: {sorted(ACTION_UNITS)})")


def _fill(ellipses: Iterable[Ellipse], size: tuple[int, int]) -> np.ndarray:
    import cv2

    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    # cv2 draws in integer pixels; 4 fractional bits keep small regions where they belong.
    shift = 4
    for e in ellipses:
        cv2.ellipse(mask, (int(round(e.centre[0] * 16)), int(round(e.centre[1] * 16))),
                    (max(1, int(round(e.axes[0] * 16))), max(1, int(round(e.axes[1] * 16)))),
                    e.angle, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(np.float32)


def au_region(au: int, points: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """The AU's filled ellipses as a 0/1 mask of ``size`` = (width, height)."""
    return _fill(au_ellipses(au, points), size)


def au_map(au: int, points: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """The AU's region, softened as the paper does: to 28 x 28, 3 x 3 box blur, back."""
    import cv2

    mask = au_region(au, points, size)
    small = cv2.resize(mask, (BLUR_SIZE, BLUR_SIZE), interpolation=cv2.INTER_AREA)
    small = cv2.blur(small, (BLUR_KERNEL, BLUR_KERNEL))
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)


def normalise(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes all zeros (it points nowhere)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def heatmap(aus: Iterable[int], points: Sequence[Sequence[float]],
            size: tuple[int, int]) -> np.ndarray:
    """The pixel-wise max of the AUs' maps, min-max normalised; zeros when no AU is given."""
    maps = [au_map(int(au), points, size) for au in sorted(set(aus))]
    if not maps:
        return np.zeros((size[1], size[0]), dtype=np.float32)
    return normalise(np.max(np.stack(maps), axis=0))


def grid_target(aus: Iterable[int], points: Sequence[Sequence[float]],
                source_size: tuple[int, int], image_size: int,
                grid: tuple[int, int]) -> np.ndarray:
    """The AU-cue target of a training image on the patch grid, (rows, cols).

    ``points`` are in the image's own pixels (``source_size`` = (width, height)); the model
    sees the image squashed to ``image_size`` square (the eval processor's resize), so the
    points are scaled by the same factors, the heatmap is drawn at that size and then
    averaged onto the grid, as ATT-COS does (``explain.att_cos``). Zeros when no AU is given
    (the alignment loss then skips the image).
    """
    import cv2

    scale = np.array([image_size / source_size[0], image_size / source_size[1]])
    full = heatmap(aus, np.asarray(points, dtype=float) * scale, (image_size, image_size))
    rows, cols = grid
    return cv2.resize(full, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32)


def cue_aus(aus: Iterable[int], emotions: Iterable[str] = ()) -> tuple[tuple[int, ...], str]:
    """The AUs whose regions a caption points at, and where they came from.

    The AUs the caption names, when it names any; otherwise the codebook AUs of the
    emotions it names (``facs.AU_CUE_CODEBOOK``); otherwise none.
    """
    named = tuple(sorted({int(a) for a in aus}))
    if named:
        return named, "caption"
    from_emotions = sorted({au for e in emotions
                            for au in AU_CUE_CODEBOOK.get(canonical_emotion(e), ())})
    return (tuple(from_emotions), "codebook") if from_emotions else ((), "none")


def mass_inside(attention: np.ndarray, region: np.ndarray) -> float:
    """The share of ``attention`` (any non-negative map, same shape) inside a 0/1 region."""
    total = float(attention.sum())
    return float((attention * (region > 0)).sum() / total) if total > 0 else 0.0


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """ATT-COS: the cosine between two maps, flattened; None when either is all zeros."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"maps of different sizes: {a.shape} and {b.shape}")
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        return None
    return float(np.clip(x @ y / (nx * ny), -1.0, 1.0))
