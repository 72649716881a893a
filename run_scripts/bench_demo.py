"""The demo of another commit and this checkout's, side by side, on this machine, in one run.

Each demo runs in its own child process with the same python (the paper stack's ``.venv``),
the same seed, a fresh model cache and a fresh work folder; the other commit's source is
checked out into a temporary git worktree and put first on ``PYTHONPATH``, so the timing
differs only by the code. Prints each demo's time inside the demo ("Demo finished in N s"),
its wall time, the learning numbers of its results table and the ratio ours / baseline.

    python run_scripts/bench_demo.py --baseline 32df895          # the demo before issue 24
    python run_scripts/bench_demo.py --baseline 32df895 --seed 1 --order ours-first

Both demos take minutes (about 7 on 2 idle AVX-512 cores, twice that on AVX2): run it on an
otherwise idle machine. ``--order`` picks which runs first, so a drift in machine load over
the run can be checked by running it both ways.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINISHED = re.compile(r"Demo finished in (\d+) s")


def _baseline_tree(revision: str, folder: Path) -> Path:
    tree = folder / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
                   check=True, capture_output=True, text=True)
    return tree


def run_demo(source: Path, work: Path, seed: int, python: str) -> dict:
    """One demo from ``source`` (its lavis_ext first on the path): times and results."""
    env = {**os.environ, "PYTHONPATH": str(source), "LAVIS_EXT_CACHE": str(work / "cache"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):  # both use the local stand-in
        env.pop(name, None)
    command = [python, "-c", "import sys; from lavis_ext.cli import main; sys.exit(main())",
               "demo", "--workdir", str(work / "demo"), "--fresh", "--no-progress",
               "--seed", str(seed)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    found = FINISHED.search(done.stdout)
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Learning check")), None)
    summary = [line.strip() for line in lines[start + 1:]
               if line.startswith("  ") and "AU F1" in line] if start is not None else []
    return {"source": str(source), "rc": done.returncode, "wall_s": round(wall, 1),
            "demo_s": int(found.group(1)) if found else None, "summary": summary,
            "tail": done.stdout[-1500:] + done.stderr[-1500:]}


def _scores(summary: list[str]) -> str:
    return "\n".join(f"  {line}" for line in summary) or "  (no learning check printed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision of the baseline demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", choices=("baseline-first", "ours-first"),
                        default="baseline-first")
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as folder:
        root = Path(folder)
        tree = _baseline_tree(args.baseline, root)
        try:
            runs = [("baseline", tree), ("ours", REPO)]
            if args.order == "ours-first":
                runs.reverse()
            measured = {}
            for name, source in runs:
                print(f"running the {name} demo ({source}) ...", flush=True)
                measured[name] = run_demo(source, root / name, args.seed, args.python)
                print(f"  {name}: {measured[name]['demo_s']} s inside the demo, "
                      f"{measured[name]['wall_s']} s wall, exit {measured[name]['rc']}",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    base, ours = measured["baseline"], measured["ours"]
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") \
        if Path("/proc/cpuinfo").exists() else "unknown CPU"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(f"\nCPU: {cpu}, AVX-512 {'yes' if 'avx512f' in flags else 'no'}, "
          f"{os.cpu_count()} cores; seed {args.seed}; order {args.order}")
    print(f"{'':10} {'demo s':>8} {'wall s':>8} exit")
    for name, m in (("baseline", base), ("ours", ours)):
        print(f"{name:10} {str(m['demo_s']):>8} {m['wall_s']:>8} {m['rc']}")
    if base["demo_s"] and ours["demo_s"]:
        print(f"ratio ours / baseline (inside the demo): {ours['demo_s'] / base['demo_s']:.2f}; "
              f"wall: {ours['wall_s'] / base['wall_s']:.2f}")
    for name, m in (("baseline", base), ("ours", ours)):
        print(f"{name} results:\n{_scores(m['summary'])}")
        if m["rc"]:
            print(f"{name} output tail:\n{m['tail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=1))
    return 0 if base["rc"] == 0 and ours["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
