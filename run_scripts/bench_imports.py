"""Start-up cost: `expblip --help` against `python -c "import lavis.models"`, side by side.

The plain layers and the light commands must not import torch, LAVIS or transformers, so
`expblip --help` should take at most a quarter of LAVIS's own import time. Both commands run
alternately in fresh processes (so load on the machine hits both alike); the medians are
compared. Exit status 1 when the ratio is above the limit.

    .venv/bin/python run_scripts/bench_imports.py [--runs 5] [--limit 0.25]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench_imports: error: {' '.join(command)} exited {result.returncode}: "
                         f"{result.stderr.strip()[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--limit", type=float, default=0.25,
                        help="largest accepted ratio of the two medians (default 0.25)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    expblip = Path(sys.executable).with_name("expblip")
    if not expblip.exists():
        found = shutil.which("expblip")
        if found is None:
            parser.error(f"no expblip script beside {sys.executable} or on PATH: "
                         "install the package (pip install -e .) first")
        expblip = Path(found)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    commands = {
        "expblip --help": [str(expblip), "--help"],
        "python -c 'import lavis.models'": [sys.executable, "-c", "import lavis.models"],
    }
    for command in commands.values():  # warm the file cache; not measured
        timed(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(timed(command, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    width = max(map(len, commands))
    print(f"{'command':<{width}}  {'median s':>8}  {'min s':>6}  {'max s':>6}  (runs: {args.runs}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for name, values in times.items():
        print(f"{name:<{width}}  {medians[name]:>8.3f}  {min(values):>6.3f}  {max(values):>6.3f}")
    cli, lavis = medians.values()
    ratio = cli / lavis
    verdict = "ok" if ratio <= args.limit else "TOO SLOW"
    print(f"ratio {ratio:.3f} (limit {args.limit}): {verdict}")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
