"""Benchmark `prepare` on a BP4D-sized label set (41 subjects x 8 tasks, ~146k frames).

Writes occurrence CSVs in the original 100-column layout (no images: none are needed to
prepare), then times ``prepare_dataset("bp4d", ...)`` and prints rows/s.

``--faces N`` instead times ``prepare bp4d --faces align`` on N frames of BP4D's size
(1040x1392, JPEG) in BP4D's layout, each with skimage's astronaut photo pasted at a random
place: crops/s for each ``--min-face`` given (MTCNN's image pyramid starts at 12/min-face, so
a larger one is faster), a rerun (every crop reused), and the time for 146k frames.

    python run_scripts/bench_prepare.py [--frames 146000] [--keep DIR]
    python run_scripts/bench_prepare.py --faces 50 [--min-face 20 80]
"""
from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lavis_ext.data.prepare import prepare_dataset  # noqa: E402
from lavis_ext.data.splits import BP4D_FOLDS  # noqa: E402
from lavis_ext.facs import AU_SUBSETS  # noqa: E402

TASKS = [f"T{i}" for i in range(1, 9)]
CODED = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28)


def write_labels(root: Path, frames: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    folder = root / "AUCoding" / "AU_OCC"
    folder.mkdir(parents=True)
    subjects = [s for part in BP4D_FOLDS for s in part]
    sequences = [(s, t) for s in subjects for t in TASKS]
    per_sequence = frames // len(sequences)
    rows_written = 0
    for subject, task in sequences:
        state = {au: int(rng.random() < 0.3) for au in CODED}
        start = rng.randint(1, 3000)
        with (folder / f"{subject}_{task}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(range(100))
            for frame in range(start, start + per_sequence):
                for au in CODED:
                    if rng.random() < 0.05:
                        state[au] = 1 - state[au]
                writer.writerow([frame] + [state.get(au, 9) for au in range(1, 100)])
                rows_written += 1
    return rows_written


BP4D_FRAMES = 146_000


def write_face_frames(root: Path, n: int, seed: int = 0) -> None:
    """N frames of F001/T1 (1040x1392) with the astronaut at random places, and their labels."""
    import numpy as np
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    face = Image.fromarray(data.astronaut())
    frames = root / "Sequences_2D+3D" / "F001" / "T1"
    frames.mkdir(parents=True)
    labels = root / "AUCoding" / "AU_OCC"
    labels.mkdir(parents=True)
    with (labels / "F001_T1.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(range(100))
        for frame in range(1000, 1000 + n):
            background = rng.integers(40, 200, (1392, 1040, 3), dtype=np.uint8)
            image = Image.fromarray(background)
            image.paste(face, (int(rng.integers(0, 1040 - 512)), int(rng.integers(0, 1392 - 512))))
            image.save(frames / f"{frame}.jpg", quality=90)
            writer.writerow([frame] + [int(rng.random() < 0.3) if au in CODED else 9
                                       for au in range(1, 100)])


def bench_faces(work: Path, n: int, min_faces: list[int]) -> None:
    import os

    import torch

    from lavis_ext.describe.prepare_faces import FacePreparer, FaceSettings

    started = time.perf_counter()
    write_face_frames(work / "bp4d_faces", n)
    print(f"wrote {n} frames of 1040x1392 in {time.perf_counter() - started:.1f} s; "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    for min_face in min_faces:
        out = work / f"faces_out_{min_face}"
        for run in ("first run", "rerun"):
            preparer = FacePreparer(FaceSettings(min_face=min_face))
            report = prepare_dataset("bp4d", work / "bp4d_faces", out, sample_every=1,
                                     faces=preparer, progress=False)
            faces = report["faces"]
            rate = faces["crops_per_second"]
            line = (f"--faces align --min-face {min_face} ({run}): {faces['aligned']} aligned "
                    f"{faces['by_source']}, not found {faces['not_found']} in "
                    f"{faces['seconds']:.1f} s")
            if rate:
                line += (f" = {rate:.2f} crops/s; {BP4D_FRAMES:,} BP4D frames would take "
                         f"{BP4D_FRAMES / rate / 3600:.1f} h")
            print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=BP4D_FRAMES)
    parser.add_argument("--keep", help="write the label set and output here (kept)")
    parser.add_argument("--faces", type=int, metavar="N",
                        help="benchmark --faces align on N 1040x1392 frames instead")
    parser.add_argument("--min-face", type=int, nargs="+", default=[20, 80],
                        help="with --faces: the --min-face values to time (default 20 80)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    if args.faces:
        try:
            bench_faces(work, args.faces, args.min_face)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        started = time.perf_counter()
        rows = write_labels(work / "bp4d", args.frames)
        print(f"wrote {rows} label rows (41 subjects x 8 tasks, {len(AU_SUBSETS['bp4d'])} "
              f"protocol AUs) in {time.perf_counter() - started:.1f} s")
        for sample_every in (10, 1):
            started = time.perf_counter()
            report = prepare_dataset("bp4d", work / "bp4d", work / f"out_{sample_every}",
                                     sample_every=sample_every)
            seconds = time.perf_counter() - started
            print(f"prepare bp4d --sample-every {sample_every}: {report['rows_read']} rows in "
                  f"{seconds:.2f} s (read {report['seconds']['read']:.2f} s) = "
                  f"{report['rows_read'] / seconds:,.0f} rows/s; wrote "
                  f"{report['records_written']}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
