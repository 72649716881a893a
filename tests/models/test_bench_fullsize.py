"""run_scripts/bench_fullsize.py on the tiny model type: the same code path as the full-size
benchmark (random weights said explicitly, a training step of each stage, phase timings,
the batch ratio), in seconds."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "run_scripts" / "bench_fullsize.py"


def _load():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_fullsize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_bench_reports_every_phase(tmp_path, capsys, one_torch_thread):
    bench = _load()
    out = tmp_path / "bench.json"
    assert bench.main(["--types", "tiny", "--batches", "1", "3", "--beams", "2",
                       "--new-tokens", "4", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())
    assert result["llm_param_dtype"] == "torch.bfloat16", "the LLM dtype is used as given"
    for run in result["generate"]:
        assert run["new_tokens"] == 4, "exactly the asked number of tokens"
        assert run["vit_s"] > 0 and run["qformer_s"] > 0 and run["prefill_s"] > 0
        assert run["decode_per_token_s"] > 0 and run["tokens_per_s"] > 0
    assert result["stage1_step_s"] > 0 and result["stage2_step_s"] > 0
    # the stock path (LAVIS's OPT, no KV cache) beside ours, at every batch
    stock = {run["batch"]: run for run in result["generate_stock"]}
    assert sorted(stock) == [1, 3]
    for run in result["generate"]:
        old = stock[run["batch"]]
        assert old["path"] == "stock" and run["path"] == "ours"
        assert old["new_tokens"] == 4 and old["decode_per_token_s"] > 0
        assert run["decode_positions_per_step"] == 1  # one new position per step
        # stock re-runs queries + BOS + the tokens so far: 10, 11, 12 for 8 tiny queries
        assert old["decode_positions_per_step"] == 8 + 1 + 2
    printed = capsys.readouterr().out
    assert "batch 3 / batch 1 time ratio" in printed and "memory-bound" in printed
    assert "stock (LAVIS's OPT class: no KV cache) vs ours" in printed and "stock/ours" in printed


@pytest.mark.slow
def test_tiny_runner_iterations_in_a_child_process(tmp_path):
    """Through LAVIS's runner with a process group of one (as gpu_check.sh does with nccl)."""
    out = tmp_path / "runner.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--types", "tiny", "--skip-bench",
                           "--runner-iters", "5", "--runner-batch", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [result] = json.loads(out.read_text())
    assert result["runner_iters"] == 5 and result["samples_per_s"] > 0
    assert "samples/s" in done.stdout


def test_gpu_check_script_is_valid_and_refuses_cpu_only_machines(tmp_path):
    import os

    import torch

    script = REPO / "run_scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run the script itself")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)})
    assert done.returncode == 2 and "needs a GPU" in done.stderr
