"""DISFA: ``ActionUnit_Labels/SN0XX/SN0XX_au<N>.txt`` intensity files, no header.

Each line is ``frameIdx,intensity`` (0-5). Occurrence is ``intensity >= threshold``
(default 2, as most AU papers; some use 1). A frame missing from one AU's file leaves that AU
not coded (null) for that frame. Frames are not shipped as images: a configurable pattern
names the extracted frame files, and :func:`extract_frames` writes them from the videos.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from lavis_ext.data.readers.common import (DatasetFormatError, SkipReport, progress, text_lines,
                                           require_dir, select_aus)
from lavis_ext.data.records import Record
from lavis_ext.errors import UsageError
from lavis_ext.facs import AU_SUBSETS

NAME = "disfa"
LABEL_DIR = "ActionUnit_Labels"
DEFAULT_FRAME_PATTERN = "Frames_LeftCamera/{subject}/{frame:05d}.jpg"
VIDEO_PATTERN = "Videos_LeftCamera/LeftVideo{subject}_comp.avi"
DEFAULT_THRESHOLD = 2
_FILE_NAME = re.compile(r"^(SN\d{3})_au(\d+)\.txt$", re.IGNORECASE)


def read(root: str | Path, report: SkipReport, *, aus: Iterable[int] | str | None = None,
         threshold: int = DEFAULT_THRESHOLD, frame_pattern: str = DEFAULT_FRAME_PATTERN,
         **_: object) -> list[Record]:
    """One record per labelled frame per subject (split set later)."""
    if not 1 <= int(threshold) <= 5:
        raise UsageError(f"DISFA occurrence threshold must be 1-5, got {threshold}")
    root = Path(root)
    label_dir = require_dir(root / LABEL_DIR, "DISFA AU labels")
    subjects = sorted(p for p in label_dir.iterdir() if p.is_dir())
    if not subjects:
        raise DatasetFormatError(f"DISFA: no SN0XX subject folders in {label_dir}")
    records: list[Record] = []
    for folder in progress(subjects, "DISFA subjects"):
        files: dict[int, Path] = {}
        for path in sorted(folder.iterdir()):
            match = _FILE_NAME.match(path.name)
            if not match or match.group(1).upper() != folder.name.upper():
                report.note("files ignored (name is not <Subject>_au<N>.txt)")
                continue
            files[int(match.group(2))] = path
        if not files:
            raise DatasetFormatError(f"DISFA: no {folder.name}_au<N>.txt files in {folder}")
        keep = select_aus(files, aus, AU_SUBSETS["disfa"])
        missing = [au for au in keep if au not in files]
        if missing:
            raise DatasetFormatError(f"DISFA: {folder} has no label file for AU(s) {missing}")
        subject = folder.name.upper()
        intensities: dict[int, dict[str, int]] = {}
        for au in keep:
            path = files[au]
            report.add_file(path)
            _read_au_file(path, str(au), intensities, report)
        for frame in sorted(intensities):
            values = intensities[frame]
            labels = {str(au): (int(values[str(au)] >= threshold) if str(au) in values else None)
                      for au in keep}
            intensity = {str(au): values.get(str(au)) for au in keep}
            if any(v is None for v in labels.values()):
                report.note("frames with an AU missing from its file (left null)")
            records.append({
                "image": frame_pattern.format(subject=subject, frame=frame),
                "image_id": f"{subject}_{frame}", "dataset": NAME, "subject": subject,
                "split": "train", "aus": labels, "au_intensity": intensity, "emotions": [],
                "caption": [], "sequence": subject, "frame": frame,
            })
    return records


def _read_au_file(path: Path, au: str, out: dict[int, dict[str, int]],
                  report: SkipReport) -> None:
    seen: set[int] = set()
    for line_no, text in text_lines(path, report):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            report.skip("wrong number of fields", path, line_no,
                        f"{text!r} (expected frameIdx,intensity)")
            continue
        try:
            frame, value = int(parts[0]), int(parts[1])
        except ValueError:
            report.skip("not an integer", path, line_no, repr(text))
            continue
        if not 0 <= value <= 5:
            report.skip("value out of range", path, line_no,
                        f"intensity {value} (expected 0-5)")
            continue
        if frame in seen:
            report.skip("duplicate frame", path, line_no, f"frame {frame}")
            continue
        seen.add(frame)
        out.setdefault(frame, {})[au] = value


def extract_frames(root: str | Path, subject: str, *, frame_pattern: str = DEFAULT_FRAME_PATTERN,
                   video_pattern: str = VIDEO_PATTERN) -> int:
    """Decode one subject's video with OpenCV and write frame k (1-based) to the pattern.

    Returns the number of frames written. Frames already on disk are left alone.
    """
    import cv2

    root = Path(root)
    video = root / video_pattern.format(subject=subject)
    if not video.is_file():
        raise DatasetFormatError(f"DISFA: video not found: {video}")
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DatasetFormatError(f"DISFA: OpenCV cannot open {video}")
    written = 0
    frame = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frame += 1
            target = root / frame_pattern.format(subject=subject, frame=frame)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), image):
                raise OSError(f"cannot write frame {frame} of {video} to {target}")
            written += 1
    finally:
        capture.release()
    return written
