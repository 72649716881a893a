"""``expblip describe``: describe the faces in photos, folders and videos, into a table.

Faces are found with MTCNN (5 landmarks, a confidence) and aligned to the training crops'
template, or with OpenCV's Haar cascade when facenet-pytorch is not installed (see
``lavis_ext.describe.faces``). Each face gets a row: where it is, which track it belongs to
in a video, the caption, and the AUs and emotions read back from the caption
(``lavis_ext.describe.table``). Rows are appended and flushed per batch; a rerun with the same
``--out`` skips the files and video frames already there. A file that cannot be read gets an
error row and the rest go on.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from PIL import Image
from tqdm import tqdm

from lavis_ext.errors import UsageError, check_partial
from lavis_ext.flags import add_no_progress, positive_int
from lavis_ext.describe.faces import (DETECTORS, Face, FaceDescriber, WholeImage,
                                      load_detector, open_image, read_caption)
from lavis_ext.describe.table import Table, TableState, blank_row, face_row
from lavis_ext.describe.track import IoUTracker

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
NO_FACE = "no face detected"


@dataclass
class Summary:
    detector: str
    files: int = 0
    faces: int = 0
    rows: int = 0
    skipped_files: int = 0
    skipped_frames: int = 0
    annotated: int = 0
    failures: list[tuple[str, int | None, str]] = field(default_factory=list)

    @property
    def failed_files(self) -> int:
        return len({f for f, frame, _ in self.failures if frame is None})


@dataclass
class _Frame:
    file: str
    frame: int | None
    timestamp_s: float | None
    faces: list[Face] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    error: str | None = None


def iter_inputs(paths: list[str]) -> Iterator[tuple[Path, Path]]:
    """(file, name under --annotate) for the files named and the media inside folders named."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
                    yield child, child.relative_to(path)
        else:
            yield path, Path(path.name)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS


def _frame_array(reader: Any, index: int) -> Any:
    frame = reader[index]  # LAVIS switches decord's bridge to torch on import
    return frame.asnumpy() if hasattr(frame, "asnumpy") else frame.numpy()


class _Run:
    """One ``describe`` pass: pending frames, their crops, and the flush that writes them."""

    def __init__(self, describer: FaceDescriber, table: Table, state: TableState,
                 annotate: Path | None, stride: int):
        self.describer, self.table, self.state = describer, table, state
        self.annotate, self.stride = annotate, stride
        self.summary = Summary(describer.detector.name)
        self.pending: list[_Frame] = []
        self.crops: list[Image.Image] = []
        self.run_rows: dict[str, list[dict[str, Any]]] = {}  # rows of files still to draw
        self.to_annotate: list[tuple[Path, Path]] = []

    def add(self, frame: _Frame, image: Image.Image | None = None) -> None:
        self.pending.append(frame)
        if image is not None:
            self.crops.extend(self.describer.crop(image, face) for face in frame.faces)
        if len(self.crops) >= self.describer.batch_size or \
                len(self.pending) >= 4 * self.describer.batch_size:
            self.flush()

    def flush(self) -> None:
        captions = iter(self.describer.caption(self.crops))
        rows = []
        for item in self.pending:
            if item.error or not item.faces:
                rows.append(blank_row(item.file, item.frame, item.timestamp_s,
                                      item.error or NO_FACE))
                if item.error:
                    self.summary.failures.append((item.file, item.frame, item.error))
                continue
            for face, face_id in zip(item.faces, item.ids):
                rows.append(face_row(item.file, item.frame, item.timestamp_s, face_id,
                                     read_caption(next(captions), face)))
                self.summary.faces += 1
        self.table.append(rows)
        self.summary.rows += len(rows)
        for row in rows:
            if row["file"] in self.run_rows:
                self.run_rows[row["file"]].append(row)
        self.pending, self.crops = [], []
        for path, name in self.to_annotate:
            self.draw(path, name)
        self.to_annotate = []

    def annotated_path(self, path: Path, name: Path) -> Path:
        assert self.annotate is not None
        return self.annotate / (name.with_suffix(".mp4") if is_video(path) else name)

    def draw(self, path: Path, name: Path, earlier: bool = True) -> None:
        """Draw a finished file from its rows: this run's, plus any an earlier run wrote."""
        from lavis_ext.describe.annotate import annotate_image, annotate_video

        key = str(path)
        rows = self.run_rows.pop(key, [])
        if earlier and (key in self.state.files_done or key in self.state.frames_done):
            rows = [r for r in self.table.read() if r["file"] == key]
        if not any(r.get("error") is None or r.get("error") == NO_FACE for r in rows):
            return  # nothing readable to draw on
        out = self.annotated_path(path, name)
        try:
            if is_video(path):
                annotate_video(path, rows, out, self.stride)
            else:
                annotate_image(path, [r for r in rows if r.get("frame") is None], out)
        except Exception as err:  # noqa: BLE001 - the table is right; only the picture failed
            print(f"expblip describe: warning: {path}: could not draw {out}: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)
            return
        self.summary.annotated += 1

    def file_done(self, path: Path, name: Path) -> None:
        if self.annotate is not None:
            self.to_annotate.append((path, name))


    def video(self, path: Path, todo: list[int], reader: Any, iou_threshold: float) -> None:
        key = str(path)
        fps = float(reader.get_avg_fps() or 0.0)
        tracker = IoUTracker(iou_threshold)
        if key in self.state.last_frame:  # continue the tracks of the run that stopped here
            tracker.resume(self.state.last_frame[key][1], self.state.next_id.get(key, 0))
        for index in todo:
            timestamp = round(index / fps, 6) if fps > 0 else None
            try:
                image = Image.fromarray(_frame_array(reader, index))
                faces = self.describer.detect([image])[0]
            except Exception as err:  # noqa: BLE001 - a bad frame must not stop the video
                self.add(_Frame(key, index, timestamp,
                                error=f"unreadable frame: {type(err).__name__}: {err}"))
                continue
            ids = tracker.update([f.box for f in faces])
            self.add(_Frame(key, index, timestamp, faces, ids), image)


def describe(paths: list[str], describer: FaceDescriber, table: Table, *, stride: int = 30,
             annotate: str | Path | None = None, iou_threshold: float = 0.3,
             progress: bool = True) -> Summary:
    """Append rows for every face in ``paths`` that ``table`` does not hold yet."""
    if stride < 1:
        raise UsageError(f"--stride {stride}: expected a positive number of frames")
    state = table.state()
    run = _Run(describer, table, state, Path(annotate) if annotate else None, stride)
    inputs = list(iter_inputs(paths))
    for path, name in tqdm(inputs, desc="describe", disable=not progress):
        key = str(path)
        run.summary.files += 1
        wants_picture = run.annotate is not None and not run.annotated_path(path, name).exists()
        if wants_picture:
            run.run_rows.setdefault(key, [])
        if key in state.files_done:
            run.summary.skipped_files += 1
            if wants_picture:
                run.draw(path, name)
            continue
        try:  # reading and detection only: a model failure later is not this file's fault
            if not path.exists():
                raise FileNotFoundError("no such file")
            if is_video(path):
                import decord

                reader = decord.VideoReader(str(path))
            else:
                image = open_image(path)
                faces = describer.detect([image])[0]
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the rest
            run.add(_Frame(key, None, None, error=f"unreadable: {type(err).__name__}: {err}"))
            continue
        if is_video(path):
            indices = range(0, len(reader), stride)
            done = state.frames_done.get(key, set())
            todo = [i for i in indices if i not in done]
            run.summary.skipped_frames += len(indices) - len(todo)
            if not todo:
                run.summary.skipped_files += 1
                if wants_picture:
                    run.draw(path, name)
                continue
            run.video(path, todo, reader, iou_threshold)
        else:
            run.add(_Frame(key, None, None, faces, list(range(len(faces)))), image)
        if wants_picture:
            run.file_done(path, name)
    run.flush()
    return run.summary


def add_face_arguments(parser: argparse.ArgumentParser, no_detect_help: str) -> None:
    """The detection, alignment and generation flags that `describe` and `serve` share, so
    that one flag means one thing in both."""
    parser.add_argument("--detector", choices=DETECTORS, default="auto",
                        help="auto: MTCNN (5 landmarks, aligned crops) if facenet-pytorch is "
                             "installed, else OpenCV's Haar cascade (boxes only)")
    parser.add_argument("--no-detect", action="store_true", help=no_detect_help)
    parser.add_argument("--min-confidence", type=float, default=0.9,
                        help="drop MTCNN faces below this probability (the cascade has none)")
    parser.add_argument("--min-face", type=positive_int, default=20,
                        help="drop faces whose box is smaller than this many pixels")
    parser.add_argument("--align-size", type=int, default=224,
                        help="side of the aligned face crop, in pixels")
    parser.add_argument("--align-margin", type=float, default=0.2,
                        help="space around the template face, as a fraction of its size")
    parser.add_argument("--max-faces", type=positive_int, default=5,
                        help="largest N faces per image or frame")
    parser.add_argument("--num-beams", type=positive_int, help="override the model's beam count")
    parser.add_argument("--max-length", type=positive_int,
                        help="override the model's caption length")
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="images, folders or videos")
    parser.add_argument("--model", default="exp_blip",
                        help="training checkpoint (.pth) or ARCH[:MODEL_TYPE] (default: the "
                             "released Exp-BLIP, 'exp_blip', whose checkpoint you configure)")
    parser.add_argument("--out", default="descriptions.csv",
                        help="table to append to: .csv, .jsonl or .parquet (a folder of part "
                             "files; needs pyarrow). A rerun skips what it already holds")
    add_face_arguments(parser, "treat each image or frame as one aligned face crop")
    parser.add_argument("--stride", type=positive_int, default=30, help="video: every N-th frame")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="faces per model call, and rows per flush")
    parser.add_argument("--annotate", metavar="DIR",
                        help="also write each image, and each video as .mp4, with boxes, "
                             "landmarks and descriptions drawn on it")
    add_no_progress(parser)


def build_describer(args: argparse.Namespace, batch_size: int) -> FaceDescriber:
    """Detector, then captioner (the slow part), from the flags both commands share."""
    from lavis_ext.describe.captioner import load_captioner

    detector = WholeImage() if getattr(args, "no_detect", False) else load_detector(
        args.detector, min_confidence=args.min_confidence, min_face=args.min_face,
        device=args.device)
    FaceDescriber(None, detector, size=args.align_size, margin=args.align_margin)  # checks
    captioner = load_captioner(args.model, args.device)
    return FaceDescriber(captioner, detector, size=args.align_size, margin=args.align_margin,
                         max_faces=args.max_faces, batch_size=batch_size,
                         generation={"num_beams": args.num_beams,
                                     "max_length": args.max_length})


def map_heap_for_model(describer: FaceDescriber, device: str) -> bool:
    """Commands call this once the model is loaded: a model that takes a large share of the
    machine's memory gets glibc's large-block mapping (``lavis_ext/memory.py``), so the
    key/value tensors freed by beam search go back to the OS. True when it was switched on."""
    from lavis_ext.memory import heap_mapping_pays, map_large_allocations

    net = describer.captioner.model
    size = sum(t.numel() * t.element_size()
               for t in (*net.parameters(), *net.buffers()))
    return heap_mapping_pays(size, device) and map_large_allocations()


def run(args: argparse.Namespace) -> int:
    table = Table(args.out)
    describer = build_describer(args, args.batch_size)
    map_heap_for_model(describer, args.device)
    summary = describe(args.paths, describer, table, stride=args.stride,
                       annotate=args.annotate, progress=not args.no_progress)
    skipped = (f"; skipped {summary.skipped_files} files and {summary.skipped_frames} frames "
               f"already in {args.out}") if summary.skipped_files or summary.skipped_frames \
        else ""
    print(f"described {summary.faces} faces in {summary.files} files with the "
          f"{summary.detector} detector -> {args.out} (+{summary.rows} rows){skipped}")
    if args.annotate:
        print(f"annotated {summary.annotated} files -> {args.annotate}")
    for file, frame, error in summary.failures:
        where = f" frame {frame}" if frame is not None else ""
        print(f"  {file}{where}: {error}", file=sys.stderr)
    failed = summary.failed_files
    return check_partial("describe", summary.files - failed, failed, "files")
