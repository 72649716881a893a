"""Benchmark `prepare` on a BP4D-sized label set (41 subjects x 8 tasks, ~146k frames).

Writes occurrence CSVs in the original 100-column layout (no images: none are needed to
prepare), then times ``prepare_dataset("bp4d", ...)`` and prints rows/s.

    python run_scripts/bench_prepare.py [--frames 146000] [--keep DIR]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=146_000)
    parser.add_argument("--keep", help="write the label set and output here (kept)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
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
