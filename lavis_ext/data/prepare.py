"""`expblip prepare DATASET --root DIR --out DIR`: native files -> split records + report.

Writes ``train.json``, ``test.json`` (``val.json`` where a split has one) and ``report.json``:
rows read, kept and skipped by reason (with file:line examples), the split used, frame
sampling, and the label distribution per split.

``--faces align`` also detects and aligns every written record's face once
(``lavis_ext.describe.prepare_faces``: the detector and alignment of ``describe``), caches
the crops under ``<out>/faces/`` and adds ``face_box``, ``face_landmarks`` and ``face_image``
to the records; a record whose face is not found is counted by reason and left out. That
step needs torch, so it is handed to ``prepare_dataset`` as an object and imported only by
``run`` when the flag is given: without it, ``prepare`` stays torch-free.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Protocol

from lavis_ext.data.readers import DATASETS, READERS, VIDEO_DATASETS, SkipReport
from lavis_ext.data.readers.common import DatasetFormatError
from lavis_ext.data.records import Record, save_records
from lavis_ext.errors import UsageError, check_partial
from lavis_ext.facs import parse_au_subset
from lavis_ext.flags import add_no_progress
from lavis_ext.io import atomic_write_text
from lavis_ext.data.sampling import DEFAULT_EVERY, sample_frames
from lavis_ext.data.splits import apply_split

# Datasets whose test split is frame-sampled too (paper: "GFT training sets, and GFT test").
SAMPLED_TEST = ("gft",)


class FaceStep(Protocol):
    """What ``prepare_dataset`` needs of the face step (``describe.prepare_faces``)."""

    def prepare(self, records: list[Record], root: str | Path, out: str | Path, *,
                progress: bool = True) -> tuple[list[Record], dict[str, Any]]:
        """The records whose face was aligned, and a summary for ``report.json``."""


def label_distribution(records: Iterable[Record]) -> dict[str, Any]:
    """Per split: images, AU present / absent / not coded counts, emotion counts."""
    out: dict[str, Any] = {}
    for record in records:
        split = out.setdefault(record["split"], {"images": 0, "aus": {}, "emotions": Counter()})
        split["images"] += 1
        for au, value in record["aus"].items():
            counts = split["aus"].setdefault(au, {"present": 0, "absent": 0, "not_coded": 0})
            counts["present" if value == 1 else "absent" if value == 0 else "not_coded"] += 1
        split["emotions"].update(record["emotions"])
    for split in out.values():
        split["aus"] = dict(sorted(split["aus"].items(), key=lambda kv: int(kv[0])))
        split["emotions"] = dict(split["emotions"].most_common())
    return out


def prepare_dataset(name: str, root: str | Path, out: str | Path, fold: int | None = None,
                    sample_every: int | None = None, seed: int = 0, *,
                    test_subjects: Iterable[str] | None = None, check_images: bool = False,
                    faces: FaceStep | None = None, progress: bool = True,
                    **reader_options: Any) -> dict[str, Any]:
    """Read one dataset, split it, sample video frames, write records and ``report.json``.

    ``sample_every``: video datasets default to 10 (1 keeps every frame); others refuse it.
    ``reader_options`` go to the dataset's reader (``aus``, ``threshold``, ``frame_pattern``,
    ``labels_file``, ``subset``, ``release``, ``min_votes``, ``image_pattern``, ...).
    ``faces``: align each sampled record's face (records without one are left out).
    """
    if name not in READERS:
        raise UsageError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetFormatError(f"{name}: --root directory not found: {root}")
    if sample_every is not None and name not in VIDEO_DATASETS and sample_every != 1:
        raise UsageError(f"--sample-every applies to the video datasets {VIDEO_DATASETS}, "
                         f"not {name}")
    started = time.perf_counter()
    report = SkipReport(name)
    options = {k: v for k, v in reader_options.items() if v is not None}
    records = READERS[name].read(root, report, **options)
    n_read = len(records)
    read_seconds = time.perf_counter() - started

    if check_images:
        present = []
        for record in records:
            if (root / record["image"]).is_file():
                present.append(record)
            else:
                report.skip("image file missing", root / record["image"])
        records = present

    n_kept = len(records)
    split_info = apply_split(name, records, fold=fold, seed=seed, test_subjects=test_subjects)
    sampling: dict[str, Any] = {}
    if name in VIDEO_DATASETS:
        every = DEFAULT_EVERY if sample_every is None else sample_every
        by_split: dict[str, list[Record]] = {}
        for record in records:
            by_split.setdefault(record["split"], []).append(record)
        records = []
        for split, items in by_split.items():
            if split == "train" or name in SAMPLED_TEST:
                sampled = sample_frames(items, every)
                sampling[split] = {"every": every, "before": len(items), "after": len(sampled)}
                items = sampled
            records.extend(items)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    face_summary = None
    if faces is not None:
        records, face_summary = faces.prepare(records, root, out, progress=progress)
    written: dict[str, int] = {}
    for split in ("train", "val", "test"):
        items = [r for r in records if r["split"] == split]
        if split == "val" and not items:
            continue
        save_records(items, out / f"{split}.json")
        written[split] = len(items)
    seconds = time.perf_counter() - started
    summary = report.as_dict()
    summary.update({
        "root": str(root), "out": str(out),
        "options": {"fold": fold, "sample_every": sample_every, "seed": seed,
                    "test_subjects": sorted(test_subjects) if test_subjects else None,
                    "check_images": check_images, **{k: v for k, v in options.items()}},
        "records_read": n_read,
        "kept": n_kept,
        "records_written": written, "split": split_info, "sampling": sampling,
        "faces": face_summary,
        "label_distribution": label_distribution(records),
        "seconds": {"read": round(read_seconds, 3), "total": round(seconds, 3)},
    })
    atomic_write_text(out / "report.json", json.dumps(summary, indent=1, default=list) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, help="which dataset's layout to read")
    parser.add_argument("--root", required=True, help="folder holding the dataset as shipped")
    parser.add_argument("--out", required=True, help="folder for train/test JSON + report.json")
    parser.add_argument("--fold", type=int, choices=(1, 2, 3),
                        help="3-fold subject protocol (bp4d, disfa, gft); default: paper split")
    parser.add_argument("--test-subjects", help="comma-separated test subjects (bp4d/disfa/gft)")
    parser.add_argument("--sample-every", type=int,
                        help="video datasets: keep 1 frame in N plus label changes (default 10; "
                             "1 keeps all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    parser.add_argument("--aus", help="AUs to keep: 'all' or comma-separated numbers "
                                      "(default: the dataset's protocol set)")
    parser.add_argument("--threshold", type=int, help="DISFA occurrence threshold (default 2)")
    parser.add_argument("--frame-pattern", help="bp4d/disfa frame image path pattern")
    parser.add_argument("--image-pattern", help="rafau/rafdb image path pattern")
    parser.add_argument("--labels-file", help="gft/faceme/emotionet label file under --root")
    parser.add_argument("--subset", choices=("compound", "basic"), help="RAF-DB part")
    parser.add_argument("--release", choices=("csv", "npy"), help="AffectNet release")
    parser.add_argument("--min-votes", type=int, help="FaceME: annotators needed (default 2)")
    parser.add_argument("--image-roots", metavar="NAME=DIR[,NAME=DIR]",
                        help="fea20k/faba: the folder of each source dataset their images come "
                             "from, e.g. rafdb=data/rafdb/basic/Image,affectnet=data/affectnet")
    parser.add_argument("--train-file", help="fea20k/faba: the training annotation file")
    parser.add_argument("--test-file", help="fea20k/faba: the test annotation file")
    parser.add_argument("--check-images", action="store_true",
                        help="skip (and count) records whose image file is missing")
    parser.add_argument("--extract-frames", action="store_true",
                        help="DISFA: first decode Videos_LeftCamera/*.avi into frame images")
    faces = parser.add_argument_group(
        "faces", "--faces align: detect and align each image once, as describe does, and train "
                 "on the crops (docs/datasets.md)")
    faces.add_argument("--faces", choices=("align",),
                       help="align: cache aligned face crops under OUT/faces/ and leave out "
                            "records whose face is not found")
    faces.add_argument("--detector", choices=("mtcnn", "haar"),
                       help="face detector (default mtcnn: 5 landmarks, as describe uses)")
    faces.add_argument("--min-confidence", type=float, help="MTCNN probability (default 0.9)")
    faces.add_argument("--min-face", type=int,
                       help="smallest face side in pixels (default 20; larger is faster)")
    faces.add_argument("--align-size", type=int, help="crop side in pixels (default 224)")
    faces.add_argument("--align-margin", type=float,
                       help="space around the template face, a fraction of it (default 0.2)")
    faces.add_argument("--device", help="where MTCNN runs: cpu (default) or cuda")
    add_no_progress(parser)


# prepare's face flags -> FaceSettings fields (None: not a setting the crops depend on).
FACE_FLAGS: dict[str, str | None] = {
    "detector": "detector", "min_confidence": "min_confidence", "min_face": "min_face",
    "align_size": "size", "align_margin": "margin", "device": None}


def face_step(args: argparse.Namespace) -> FaceStep | None:
    """The face step ``--faces`` asks for; its module (torch) is imported only then."""
    given = {field: getattr(args, flag) for flag, field in FACE_FLAGS.items()
             if field and getattr(args, flag, None) is not None}
    flags = [f for f in FACE_FLAGS if getattr(args, f, None) is not None]
    if not getattr(args, "faces", None):
        if flags:
            raise UsageError(", ".join("--" + f.replace("_", "-") for f in flags)
                             + " only apply with --faces align")
        return None
    from lavis_ext.describe.prepare_faces import FacePreparer, FaceSettings

    return FacePreparer(FaceSettings(**given), device=getattr(args, "device", None) or "cpu")


def _parse_aus(text: str | None) -> str | list[int] | None:
    if text is None or text == "all":
        return text
    return list(parse_au_subset(text, "--aus") or ())


def run(args: argparse.Namespace) -> int:
    """Errors name the file and line; `expblip` prints them (exit 2, lavis_ext.cli)."""
    from tqdm import tqdm

    test_subjects = ([s.strip() for s in args.test_subjects.split(",") if s.strip()]
                     if args.test_subjects else None)
    faces = face_step(args)
    options = {"aus": _parse_aus(args.aus), "threshold": args.threshold,
               "frame_pattern": args.frame_pattern, "image_pattern": args.image_pattern,
               "labels_file": args.labels_file, "subset": args.subset,
               "release": args.release, "min_votes": args.min_votes,
               "image_roots": args.image_roots, "train_file": args.train_file,
               "test_file": args.test_file}
    if args.extract_frames:
        if args.dataset != "disfa":
            raise UsageError("--extract-frames applies to disfa only")
        from lavis_ext.data.readers import disfa

        labels = Path(args.root) / disfa.LABEL_DIR
        subjects = sorted(p.name for p in labels.iterdir() if p.is_dir()) \
            if labels.is_dir() else []
        pattern = args.frame_pattern or disfa.DEFAULT_FRAME_PATTERN
        for subject in tqdm(subjects, desc="extracting DISFA frames",
                            disable=args.no_progress):
            disfa.extract_frames(args.root, subject, frame_pattern=pattern)
    report = prepare_dataset(args.dataset, args.root, args.out, fold=args.fold,
                             sample_every=args.sample_every, seed=args.seed,
                             test_subjects=test_subjects, check_images=args.check_images,
                             faces=faces, progress=not args.no_progress, **options)
    print(f"{args.dataset}: read {report['rows_read']} rows from {report['files_read']} "
          f"file(s), skipped {report['rows_skipped']}, wrote " +
          ", ".join(f"{split}.json ({n})" for split, n in report["records_written"].items()) +
          f" in {report['seconds']['total']:.2f} s")
    for reason, count in report["skipped"].items():
        print(f"  skipped {count}: {reason} (e.g. {report['skipped_examples'][reason][0]})")
    if report["faces"] is not None:
        from lavis_ext.describe.prepare_faces import format_summary

        print("\n".join(format_summary(report["faces"])))
    print(f"  report: {Path(args.out) / 'report.json'}")
    if report["faces"] is not None:  # no face found anywhere: a wrong root or pattern
        return check_partial("prepare", report["faces"]["aligned"],
                             sum(report["faces"]["not_found"].values()), "faces")
    return 0
