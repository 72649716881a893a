"""The same tiny stage-2 training run on both stacks, side by side (docs/hardware.md).

Runs ``run_scripts/bench_fullsize.py --types tiny --skip-bench --runner-iters N`` (stage 2
through the plugin's ``runner_expblip_iter`` on synthetic faces, random tiny weights) once with the paper
stack's python and once with the current stack's, alternating for ``--repeats`` rounds so
that a busy machine slows both alike, and prints one row per stack: versions, samples/s
(median over rounds) and peak memory (the process's VmHWM, largest over rounds).

    python run_scripts/bench_stacks.py                       # .venv and .venv-current
    python run_scripts/bench_stacks.py --iters 40 --repeats 3 --batch 8
    python run_scripts/bench_stacks.py --paper PY --current PY  # other interpreters

Set up both first: ``bash run_scripts/setup_env.sh --stack paper`` and ``--stack current``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("import importlib.metadata as m, json; print(json.dumps({d: m.version(d) for d in "
            "('torch', 'transformers', 'numpy', 'opencv-python-headless', 'salesforce-lavis')}))")


def versions(python: str) -> dict[str, str]:
    done = subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def one_run(python: str, iters: int, batch: int, device: str) -> dict:
    """One child process: its own peak memory; results through a JSON file."""
    with tempfile.TemporaryDirectory(prefix="bench_stacks_") as folder:
        out = Path(folder) / "result.json"
        command = [python, str(REPO / "run_scripts" / "bench_fullsize.py"), "--types", "tiny",
                   "--skip-bench", "--runner-iters", str(iters), "--runner-batch", str(batch),
                   "--device", device, "--json", str(out)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{python}: bench_fullsize failed ({done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        (result,) = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", default=str(REPO / ".venv" / "bin" / "python"),
                        help="the paper stack's python")
    parser.add_argument("--current", default=str(REPO / ".venv-current" / "bin" / "python"),
                        help="the current stack's python")
    parser.add_argument("--iters", type=int, default=30, help="training iterations per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    stacks = {"paper": args.paper, "current": args.current}
    for name, python in stacks.items():
        if not Path(python).exists():
            print(f"no {name} stack at {python}: bash run_scripts/setup_env.sh --stack {name}",
                  file=sys.stderr)
            return 2
    runs: dict[str, list[dict]] = {name: [] for name in stacks}
    for round_ in range(args.repeats):
        for name, python in stacks.items():
            result = one_run(python, args.iters, args.batch, args.device)
            runs[name].append(result)
            print(f"round {round_ + 1} {name}: {result['samples_per_s']:.2f} samples/s, peak "
                  f"{result['peak_gib']:.2f} GiB", flush=True)
    print(f"\ntiny stage 2, runner_iter, {args.iters} iterations at batch {args.batch}, "
          f"{args.device}, {os.cpu_count()} CPUs; median samples/s and largest peak over "
          f"{args.repeats} alternating rounds")
    header = ("stack", "transformers", "numpy", "opencv", "torch", "samples/s", "peak GiB")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, python in stacks.items():
        v = versions(python)
        speed = statistics.median(r["samples_per_s"] for r in runs[name])
        peak = max(r["peak_gib"] for r in runs[name])
        print(f"| {name} | {v['transformers']} | {v['numpy']} | {v['opencv-python-headless']} | "
              f"{v['torch']} | {speed:.2f} | {peak:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
