"""`describe` throughput: model batches of 16 faces against one face per call, side by side.

Both runs read the same photos (the astronaut, mirrored and shifted copies, and synthetic
faces), detect with the same detector, and write their own table; detection and captioning
time are measured apart, and the captions of the two runs are compared.

    .venv/bin/python run_scripts/bench_describe.py [--model exp_blip:tiny] [--images 32]
        [--num-beams 3] [--batch-size 16] [--threads 2]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from lavis_ext.describe.cli import describe  # noqa: E402
from lavis_ext.describe.faces import FaceDescriber, load_detector  # noqa: E402
from lavis_ext.describe.table import Table  # noqa: E402


class TimedDescriber(FaceDescriber):
    """Adds up the seconds spent detecting and captioning."""

    detect_s = caption_s = 0.0
    calls = 0

    def detect(self, images):
        began = time.perf_counter()
        try:
            return super().detect(images)
        finally:
            self.detect_s += time.perf_counter() - began

    def caption(self, crops):
        began = time.perf_counter()
        try:
            return super().caption(crops)
        finally:
            self.caption_s += time.perf_counter() - began
            self.calls += -(-len(crops) // self.batch_size) if crops else 0


def photos(folder: Path, count: int) -> list[str]:
    from PIL import Image, ImageOps
    from skimage import data

    from lavis_ext.data.synthetic.face import draw_face, random_aus

    astronaut = Image.fromarray(data.astronaut())
    rng = random.Random(0)
    paths = []
    for i in range(count):
        if i % 2 == 0:  # the photo, shifted and sometimes mirrored
            dx, dy = rng.randint(-40, 40), rng.randint(-30, 30)
            image = astronaut.rotate(0, translate=(dx, dy))
            if i % 4 == 2:
                image = ImageOps.mirror(image)
        else:  # a drawn face on a larger canvas
            canvas = Image.new("RGB", (384, 384), (40, 60, 80))
            canvas.paste(draw_face(random_aus(rng, (1, 2, 4, 6, 12, 15, 25)), rng, size=192),
                         (rng.randint(20, 170), rng.randint(20, 170)))
            image = canvas
        path = folder / f"{i:03d}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="exp_blip:tiny")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    from lavis_ext.describe.captioner import load_captioner

    if args.threads:
        torch.set_num_threads(args.threads)
    captioner = load_captioner(args.model)
    detector = load_detector()
    generation = {"num_beams": args.num_beams, "max_length": args.max_length}
    print(f"model {args.model}, detector {detector.name}, {args.images} photos, beams "
          f"{args.num_beams}, {torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = photos(folder, args.images)
        # Warm up both paths once (first calls allocate and compile).
        warm = TimedDescriber(captioner, detector, batch_size=args.batch_size,
                              generation=generation)
        describe(paths[:2], warm, Table(folder / "warm.csv"), progress=False)
        results = {}
        for size in (1, args.batch_size, args.batch_size, 1):  # interleaved: A B B A
            describer = TimedDescriber(captioner, detector, batch_size=size,
                                       generation=generation)
            out = folder / f"rows-{size}-{len(results)}.csv"
            began = time.perf_counter()
            summary = describe(paths, describer, Table(out), progress=False)
            wall = time.perf_counter() - began
            rows = list(Table(out).read())
            entry = results.setdefault(size, {"wall": 0.0, "detect": 0.0, "caption": 0.0,
                                              "faces": 0, "calls": 0, "captions": None})
            entry["wall"] += wall
            entry["detect"] += describer.detect_s
            entry["caption"] += describer.caption_s
            entry["faces"] += summary.faces
            entry["calls"] += describer.calls
            entry["captions"] = [r["caption"] for r in rows]
    print(f"{'faces/call':>10} {'faces':>6} {'calls':>6} {'faces/s':>8} {'caption faces/s':>16} "
          f"{'detect ms/photo':>16}")
    for size, entry in results.items():
        print(f"{size:>10} {entry['faces']:>6} {entry['calls']:>6} "
              f"{entry['faces'] / entry['wall']:>8.2f} "
              f"{entry['faces'] / entry['caption']:>16.2f} "
              f"{1000 * entry['detect'] / (2 * args.images):>16.1f}")
    one, many = results[1], results[args.batch_size]
    same = one["captions"] == many["captions"]
    print(f"speed-up {many['faces'] / many['wall'] / (one['faces'] / one['wall']):.2f}x overall, "
          f"{one['caption'] / many['caption']:.2f}x in captioning; identical captions: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
