"""`expblip serve` under load: --max-batch 1 against --max-batch 16, at 1, 4 and 16 clients.

Both servers run at once (same model and settings) and are measured in turns at each client
count (1, 16, 16, 1; the two runs of each are pooled), so load from other processes falls
on both alike. Each client posts the same photo
(raw bytes) over one keep-alive connection. Prints requests/s, p50/p95 latency, the mean
batch the server formed, and failures.

Photos: ``aligned`` (a 112 px face crop posted with ``?aligned=1``: captioning only),
``face`` (a 128 px face crop, MTCNN with ``--min-face 72``), ``astronaut`` (the 512 px photo).

    .venv/bin/python run_scripts/bench_serve.py [--model exp_blip:tiny] [--clients 1 4 16]
        [--requests 64] [--photo aligned|face|astronaut] [-- extra serve flags]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from lavis_ext.serve.load import LoadStats, ServerProcess, load  # noqa: E402


def photo(kind: str) -> bytes:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut())
    if kind == "face":  # a tight face crop: a short detector pyramid
        image = image.crop((155, 35, 295, 200)).resize((128, 128))
    elif kind == "aligned":  # sized as the model's input; posted with ?aligned=1
        image = image.crop((160, 45, 290, 185)).resize((112, 112))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="exp_blip:tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64,
                        help="requests per run, split over the clients (at least 2 each)")
    parser.add_argument("--photo", choices=("aligned", "face", "astronaut"), default="face")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of each server")
    parser.add_argument("serve_args", nargs="*",
                        help="more `expblip serve` flags, after --, e.g. -- --num-beams 4")
    args = parser.parse_args()
    common = ["--model", args.model, "--max-wait-ms", "20", "--request-timeout", "120",
              *args.serve_args]
    if args.photo == "face" and "--min-face" not in common:
        common += ["--min-face", "72"]  # the crop's face is ~80 px: a short pyramid
    body = photo(args.photo)
    path = "/v1/describe?aligned=1" if args.photo == "aligned" else "/v1/describe"
    env = {"OMP_NUM_THREADS": args.threads}
    print(f"serve {' '.join(common)}; photo {args.photo} ({len(body)} bytes), "
          f"{args.requests} requests per run, OMP_NUM_THREADS={args.threads}")
    with ServerProcess(common + ["--max-batch", "1"], env) as single, \
            ServerProcess(common + ["--max-batch", "16"], env) as batched:
        single.wait_ready(600)
        batched.wait_ready(600)
        servers = {1: single, 16: batched}
        for server in servers.values():
            load(server.url, body, 4, 2, path=path)  # warm up
            load(server.url, body, 1, 1, path=path)  # and end on a lone request
        print(f"{'max-batch':>9} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'batch':>5} {'failures':>8}")
        for clients in args.clients:
            per_client = max(2, -(-args.requests // clients))
            runs: dict[int, list] = {1: [], 16: []}
            for max_batch in (1, 16, 16, 1):
                runs[max_batch].append(load(servers[max_batch].url, body, clients,
                                            per_client, path=path))
            rates = {}
            for max_batch in (1, 16):
                stats = LoadStats(clients, 0, sum(r.seconds for r in runs[max_batch]))
                for run in runs[max_batch]:
                    stats.latencies_ms += run.latencies_ms
                    stats.failures += run.failures
                    stats.batch_sizes += run.batch_sizes
                rates[max_batch] = stats.rps
                mean_batch = (sum(stats.batch_sizes) / len(stats.batch_sizes)
                              if stats.batch_sizes else float("nan"))
                print(f"{max_batch:>9} {clients:>7} {stats.rps:>7.2f} "
                      f"{stats.percentile(50):>8.1f} {stats.percentile(95):>8.1f} "
                      f"{mean_batch:>5.1f} {len(stats.failures):>8}")
                for failure in stats.failures[:3]:
                    print(f"          failure: {failure}")
            print(f"{'':>9} {clients:>7} ratio 16/1: {rates[16] / rates[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
