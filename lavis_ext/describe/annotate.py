"""Pictures of what ``describe`` found: boxes, the 5 landmarks and the wrapped description.

Drawn from the table's rows (not from model state), so a rerun can draw the files an earlier
run described. Images keep their format; videos become .mp4 (MPEG-4 part 2, OpenCV's
built-in encoder) holding the sampled frames at the rate that keeps their timing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lavis_ext.describe.faces import open_image
from lavis_ext.io import atomic_write

COLORS = ((255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 120), (255, 120, 255),
          (255, 160, 60))
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP",
                ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw(image: Image.Image, rows: Iterable[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with each face row's box, points and description drawn on it."""
    canvas = image.convert("RGB").copy()
    pen = ImageDraw.Draw(canvas)
    scale = max(canvas.size) / 512.0
    font = _font(max(11, round(13 * scale)))
    width = max(1, round(2 * scale))
    for row in rows:
        if row.get("x") is None:
            continue
        color = COLORS[int(row.get("face_id") or 0) % len(COLORS)]
        x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
        pen.rectangle((x, y, x + w, y + h), outline=color, width=width)
        radius = max(2, round(2.5 * scale))
        for i in range(5):
            px, py = row.get(f"lm{i}_x"), row.get(f"lm{i}_y")
            if px is not None and py is not None:
                pen.ellipse((px - radius, py - radius, px + radius, py + radius), fill=color)
        label = f"#{row.get('face_id')}: {row.get('caption') or ''}".strip()
        chars = max(16, int(max(w, 160 * scale) / max(6.0, font.getlength("n"))))
        text = "\n".join(textwrap.wrap(label, chars)[:6])
        left, top, right, bottom = pen.multiline_textbbox((0, 0), text, font=font)
        tw, th = right - left + 6, bottom - top + 6
        tx = min(max(0.0, x), max(0.0, canvas.width - tw))
        ty = y + h + 3 if y + h + 3 + th <= canvas.height else max(0.0, y - th - 3)
        pen.rectangle((tx, ty, tx + tw, ty + th), fill=(0, 0, 0))
        pen.multiline_text((tx + 3 - left, ty + 3 - top), text, fill=color, font=font)
    return canvas


def annotate_image(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                   out: str | os.PathLike) -> None:
    image = open_image(Path(path))
    out = Path(out)
    fmt = SAVE_FORMATS.get(out.suffix.lower(), "PNG")
    atomic_write(out, lambda handle: draw(image, rows).save(handle, format=fmt))


def annotate_video(path: str | os.PathLike, rows: Sequence[dict[str, Any]],
                   out: str | os.PathLike, stride: int) -> None:
    """An .mp4 of the described frames, each with its rows drawn (frames in the table only)."""
    import cv2
    import decord

    by_frame: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("frame") is not None:
            by_frame.setdefault(int(row["frame"]), []).append(row)
    if not by_frame:
        return
    reader = decord.VideoReader(str(path))
    fps = float(reader.get_avg_fps() or 25.0) / max(1, stride)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_video = os.path.join(tmp, "annotated.mp4")
        writer = None
        try:
            for index in sorted(by_frame):
                frame = reader[index]
                array = frame.asnumpy() if hasattr(frame, "asnumpy") else frame.numpy()
                picture = np.asarray(draw(Image.fromarray(array), by_frame[index]))
                if writer is None:
                    height, width = picture.shape[:2]
                    writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*"mp4v"),
                                             max(fps, 0.1), (width, height))
                    if not writer.isOpened():
                        raise RuntimeError("OpenCV could not open an mp4v video writer")
                writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        finally:
            if writer is not None:
                writer.release()
        with open(tmp_video, "rb") as source:
            atomic_write(out, lambda handle: shutil.copyfileobj(source, handle))
