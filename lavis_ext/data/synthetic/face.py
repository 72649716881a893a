"""Procedural faces whose geometry follows FACS action units (PIL only, fast).

A face is drawn from an AU dict (AU number -> intensity 0-5; 1 also works as "present") and an
identity (skin tone, face shape, hair, background), with random position, scale, tilt and
noise. Each AU moves the part it moves in FACS: brows (1, 2, 4), lids (5, 7, 43), cheeks (6),
nose (9, 10, 11), lip corners (12, 14, 15, 20), lips (8, 16, 18, 22, 23, 24, 28), mouth opening
(25, 26, 27), tongue (19), chin (17) and neck (21). Emotions use the prototype AU sets of
``lavis_ext.facs.BASIC_EMOTIONS``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw

from lavis_ext.facs import BASIC_EMOTIONS

# Intensity (0-5) -> how far a part moves, as a fraction of its full movement.
_STRENGTH = (0.0, 0.55, 0.72, 0.87, 1.0, 1.12)
SKIN_TONES = ((247, 212, 186), (236, 192, 160), (214, 163, 125), (190, 136, 96),
              (160, 108, 72), (122, 80, 52), (92, 60, 40))
HAIR_COLORS = ((30, 22, 18), (70, 45, 25), (120, 80, 40), (200, 170, 110), (150, 150, 150),
               (90, 30, 20))
# AUs that cannot be drawn together: the second one is dropped by ``random_aus``.
EXCLUSIVE = ((12, 15), (5, 43), (7, 43), (18, 20), (22, 20), (28, 25), (24, 25), (27, 23))


@dataclass(frozen=True)
class Identity:
    """What stays fixed for one (synthetic) person across frames."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    aspect: float  # face height / width
    eye_spacing: float
    mouth_width: float
    brow_weight: float
    hair_style: int


def random_identity(rng: random.Random) -> Identity:
    base = rng.choice(SKIN_TONES)
    skin = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in base)
    background = tuple(rng.randint(20, 235) for _ in range(3))
    return Identity(skin=skin, hair=rng.choice(HAIR_COLORS), background=background,
                    aspect=rng.uniform(1.18, 1.38), eye_spacing=rng.uniform(0.19, 0.23),
                    mouth_width=rng.uniform(0.17, 0.22), brow_weight=rng.uniform(0.8, 1.3),
                    hair_style=rng.randint(0, 2))


def random_aus(rng: random.Random, au_set: Iterable[int], p: float = 0.25,
               intensities: tuple[int, int] = (3, 5)) -> dict[int, int]:
    """Each AU on with probability p, at an intensity in the range; exclusions applied."""
    aus = {au: rng.randint(*intensities) for au in au_set if rng.random() < p}
    for keep, drop in EXCLUSIVE:
        if keep in aus and drop in aus:
            del aus[drop]
    return aus


def emotion_aus(emotions: Iterable[str], rng: random.Random,
                intensities: tuple[int, int] = (3, 5)) -> dict[int, int]:
    """The union of the emotions' prototype AUs (compound labels merge two)."""
    aus: dict[int, int] = {}
    for name in emotions:
        for au in BASIC_EMOTIONS[name].prototype_aus:
            aus[au] = max(aus.get(au, 0), rng.randint(*intensities))
    for keep, drop in EXCLUSIVE:
        if keep in aus and drop in aus:
            del aus[drop]
    return aus


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))


def draw_face(aus: Mapping[int | str, int | None], rng: random.Random, size: int = 112,
              identity: Identity | None = None, *, noise: float | None = None,
              jitter: float = 1.0) -> Image.Image:
    """Draw one face showing ``aus`` (AU -> intensity 0-5; None or 0 = absent).

    ``jitter`` scales the random position/scale/tilt (video frames of one subject use less).
    """
    return draw_face_points(aus, rng, size, identity, noise=noise, jitter=jitter)[0]


def draw_face_points(aus: Mapping[int | str, int | None], rng: random.Random, size: int = 112,
                     identity: Identity | None = None, *, noise: float | None = None,
                     jitter: float = 1.0) -> tuple[Image.Image, np.ndarray]:
    """``draw_face``, and where its 5 MTCNN-style points are drawn: the eye centres, the nose
    tip and the mouth corners, image-left first, after the tilt (a (5, 2) array).

    The same random draws as ``draw_face``, so the same seed gives the same face; the points
    are ground truth for tests of landmark-derived regions (``expblip explain``).
    """
    identity = identity or random_identity(rng)
    s = {int(au): _STRENGTH[max(0, min(5, int(v)))] for au, v in aus.items() if v}

    def f(au: int) -> float:
        return s.get(au, 0.0)

    img = Image.new("RGB", (size, size), identity.background)
    draw = ImageDraw.Draw(img)
    # Background clutter, so that the face and not the frame carries the signal.
    for _ in range(2):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        r = rng.uniform(0.15, 0.5) * size
        shade = _mix(identity.background, tuple(rng.randint(0, 255) for _ in range(3)), 0.35)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)

    W = size * (0.58 + rng.uniform(-0.06, 0.06) * jitter)
    H = W * identity.aspect
    cx = size / 2 + rng.uniform(-0.07, 0.07) * size * jitter
    cy = size / 2 + rng.uniform(-0.05, 0.07) * size * jitter
    lw = max(1, round(size / 75))
    skin = identity.skin
    shadow = _mix(skin, (40, 20, 10), 0.45)
    line = _mix(skin, (20, 10, 5), 0.7)

    # Neck, with cords for AU 21.
    draw.rectangle((cx - 0.22 * W, cy + 0.3 * H, cx + 0.22 * W, size), fill=_mix(skin, shadow, 0.2))
    if f(21):
        for dx in (-0.12, 0.12):
            draw.line((cx + dx * W, cy + 0.52 * H, cx + dx * 0.6 * W, size), fill=shadow,
                      width=lw + 1)
    # Hair behind the head.
    if identity.hair_style:
        bottom = cy + 0.1 * H * identity.hair_style
        draw.ellipse((cx - 0.56 * W, cy - 0.62 * H, cx + 0.56 * W, bottom),
                     fill=identity.hair)
    # Face, with the chin lowered by a jaw drop / mouth stretch.
    jaw = 0.07 * H * f(26) + 0.12 * H * f(27)
    draw.ellipse((cx - 0.6 * W, cy - 0.06 * H, cx - 0.42 * W, cy + 0.12 * H), fill=skin)
    draw.ellipse((cx + 0.42 * W, cy - 0.06 * H, cx + 0.6 * W, cy + 0.12 * H), fill=skin)
    draw.ellipse((cx - W / 2, cy - H / 2, cx + W / 2, cy + H / 2), fill=skin)
    if jaw:
        draw.ellipse((cx - 0.36 * W, cy + 0.1 * H, cx + 0.36 * W, cy + H / 2 + jaw), fill=skin)
    if not identity.hair_style:
        draw.chord((cx - W / 2, cy - H / 2, cx + W / 2, cy - 0.1 * H), 180, 360, fill=identity.hair)

    # Cheeks (AU 6): raised, rounded, flushed.
    ey = cy - 0.06 * H
    ex = identity.eye_spacing * W
    if f(6):
        blush = _mix(skin, (215, 60, 70), 0.35 + 0.25 * f(6))
        for side in (-1, 1):
            x = cx + side * (ex + 0.02 * W)
            y = ey + (0.17 - 0.05 * f(6)) * H
            draw.ellipse((x - 0.13 * W, y - 0.065 * H, x + 0.13 * W, y + 0.065 * H), fill=blush)

    # Eyes: openness from 5 (wider), 7 and 6 (narrower), 43 (closed).
    ew, eh = 0.085 * W, 0.035 * H
    openness = 1.0 + 0.8 * f(5) - 0.55 * f(7) - 0.4 * f(6)
    closed = f(43) > 0
    for side in (-1, 1):
        x = cx + side * ex
        if closed:
            draw.arc((x - ew, ey - eh, x + ew, ey + eh * 1.2), 20, 160, fill=line, width=lw + 1)
            continue
        h = max(0.12, openness) * eh
        draw.ellipse((x - ew, ey - h, x + ew, ey + h), fill=(245, 245, 240), outline=line,
                     width=lw)
        r = min(0.55 * ew, 0.05 * W)
        ih = min(r, h)
        draw.ellipse((x - r, ey - ih, x + r, ey + ih), fill=(40, 30, 25))
        if f(7):  # tightened lower lid: a straight raised line
            draw.line((x - ew, ey + 0.4 * h, x + ew, ey + 0.4 * h), fill=line, width=lw)
        if f(6):  # crow's feet
            ox = x + side * ew
            for dy in (-0.5, 0, 0.5):
                draw.line((ox + side * 0.02 * W, ey + dy * eh, ox + side * 0.07 * W,
                           ey + dy * eh * 2.2), fill=shadow, width=lw)

    # Brows: 1 lifts the inner ends, 2 the outer ends, 4 lowers and knits them.
    by = ey - 0.11 * H
    thick = max(lw + 1, round(0.042 * H * identity.brow_weight))
    brow = _mix(identity.hair, (0, 0, 0), 0.45)
    for side in (-1, 1):
        xi = cx + side * (ex - 0.075 * W - 0.05 * W * f(4))
        xo = cx + side * (ex + 0.1 * W)
        yi = by - 0.11 * H * f(1) + 0.065 * H * f(4) + 0.01 * H
        yo = by - 0.11 * H * f(2) + 0.035 * H * f(4) + 0.01 * H
        ym = (yi + yo) / 2 - 0.025 * H - 0.03 * H * f(2)
        xm = (xi + xo) / 2
        draw.line((xi, yi, xm, ym, xo, yo), fill=brow, width=thick, joint="curve")
    if f(4):
        for dx in (-0.025, 0.025):
            draw.line((cx + dx * W, by - 0.01 * H, cx + dx * 0.6 * W, by + 0.07 * H),
                      fill=shadow, width=lw)
    if f(1) or f(2):  # forehead wrinkles
        span = 0.1 * W + 0.12 * W * f(2)
        for k in range(2 + int(f(1) + f(2) > 1.2)):
            y = by - (0.09 + 0.045 * k) * H
            draw.arc((cx - span, y, cx + span, y + 0.05 * H), 200, 340, fill=shadow, width=lw)

    # Nose: 9 wrinkles the bridge and lifts the nostrils, 10 lifts them a little.
    ny = cy + 0.12 * H - 0.025 * H * f(9) - 0.015 * H * f(10)
    draw.line((cx, ey + 0.02 * H, cx - 0.02 * W, ny), fill=shadow, width=lw)
    nw = 0.06 * W * (1 + 0.3 * f(9))
    for side in (-1, 1):
        x = cx + side * nw * 0.6
        draw.ellipse((x - 0.025 * W, ny - 0.012 * H, x + 0.025 * W, ny + 0.012 * H),
                     fill=_mix(skin, (30, 10, 5), 0.6))
    if f(9):
        for k in range(3):
            y = ey + (0.03 + 0.025 * k) * H
            draw.line((cx - 0.05 * W, y, cx + 0.05 * W, y), fill=shadow, width=lw)
    fold = max(f(11), 0.6 * f(10), 0.5 * f(12), 0.4 * f(6))
    my = cy + 0.28 * H - 0.02 * H * f(17)
    mw = identity.mouth_width * W
    mw *= 1 + 0.35 * f(20) + 0.22 * f(12) - 0.4 * f(18) - 0.3 * f(22) - 0.15 * f(27) - 0.1 * f(14) \
        - 0.15 * f(8)
    if fold:  # nasolabial folds
        for side in (-1, 1):
            draw.line((cx + side * nw * 1.1, ny, cx + side * (mw + 0.03 * W), my + 0.02 * H),
                      fill=_mix(skin, shadow, 0.4 + 0.5 * fold), width=lw)

    # Mouth: corners (12 up, 15 down, 20 back), opening (25, 26, 27, 16, 10), lips (23, 24 ...).
    corner = -0.11 * H * f(12) + 0.09 * H * f(15) + 0.012 * H * f(20) - 0.02 * H * f(14)
    gap = max(0.03 * H * f(25), 0.1 * H * f(26), 0.18 * H * f(27), 0.05 * H * f(22),
              0.035 * H * f(16))
    lip_scale = max(0.05, 1 - 0.6 * f(23) - 0.7 * f(24) - 0.95 * f(28) - 0.4 * f(8))
    lip_scale *= 1 + 0.5 * f(18) + 0.3 * f(22)
    tu, tl = 0.032 * H * lip_scale, 0.042 * H * lip_scale
    raise_upper = 0.03 * H * f(10)
    chin_push = 0.02 * H * f(17)
    pts = [i / 6 - 1 for i in range(13)]
    upper_out, upper_in, lower_in, lower_out = [], [], [], []
    for t in pts:
        x = cx + t * mw
        bell = max(0.0, 1 - t * t)
        base = my + corner * t * t
        g = gap * bell ** 0.7 / 2
        up = base - g - raise_upper * bell
        lo = base + g - chin_push * bell + 0.01 * H * f(16) * bell
        upper_in.append((x, up))
        upper_out.append((x, up - tu * bell ** 0.5 - 0.004 * H))
        lower_in.append((x, lo))
        lower_out.append((x, lo + tl * bell ** 0.5 + 0.004 * H))
    lips = _mix(skin, (170, 50, 60), 0.45)
    draw.polygon(upper_out + lower_out[::-1], fill=lips)
    if gap + raise_upper > 1.0:
        draw.polygon(upper_in + lower_in[::-1], fill=(60, 15, 20))
        if f(10) or f(12) or f(16) or f(20):  # teeth show
            teeth = [(x, y + 0.35 * (lo - y)) for (x, y), (_, lo) in zip(upper_in, lower_in)]
            draw.polygon(upper_in + teeth[::-1], fill=(235, 232, 220))
    else:
        draw.line(upper_in, fill=_mix(lips, (40, 10, 10), 0.6), width=lw, joint="curve")
    if f(19):  # tongue out, over the lower lip
        tw = 0.35 * mw
        top = lower_in[6][1] - 0.01 * H
        draw.ellipse((cx - tw, top, cx + tw, top + 0.09 * H * f(19) + 0.03 * H),
                     fill=(220, 90, 100))
    if f(24):  # pressed lips bulge the skin above and below
        draw.arc((cx - mw, my - 0.06 * H, cx + mw, my + 0.04 * H), 200, 340, fill=shadow, width=lw)
    if f(14):  # dimples
        for side in (-1, 1):
            x, y = cx + side * (mw + 0.015 * W), my + corner
            draw.ellipse((x - lw - 1, y - lw - 1, x + lw + 1, y + lw + 1), fill=shadow)
    if f(17):  # chin boss
        y = lower_out[6][1] + 0.05 * H
        draw.arc((cx - 0.12 * W, y, cx + 0.12 * W, y + 0.07 * H), 200, 340, fill=shadow,
                 width=lw + 1)

    mouth_y = my + corner  # the corners' height (corner * t * t at t = +-1)
    points = np.array([[cx - ex, ey], [cx + ex, ey], [cx - 0.01 * W, ny - 0.012 * H],
                       [cx - mw, mouth_y], [cx + mw, mouth_y]])
    if jitter:
        angle = rng.uniform(-8, 8) * jitter
        if abs(angle) > 0.5:
            img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=identity.background)
            # PIL turns the picture counter-clockwise about its centre; so do the points.
            a, centre = np.radians(angle), np.array([size / 2, size / 2])
            turn = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
            points = (points - centre) @ turn.T + centre
    sigma = rng.uniform(2.0, 9.0) if noise is None else noise
    if sigma > 0:
        array = np.asarray(img, dtype=np.int16)
        grain = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, array.shape)
        img = Image.fromarray(np.clip(array + grain, 0, 255).astype(np.uint8))
    return img, points


def draw_emotion(emotions: Iterable[str], rng: random.Random, size: int = 112,
                 identity: Identity | None = None) -> tuple[Image.Image, dict[int, int]]:
    """A face showing the prototype AUs of one emotion or the union for a compound one."""
    aus = emotion_aus(emotions, rng)
    return draw_face(aus, rng, size, identity), aus
