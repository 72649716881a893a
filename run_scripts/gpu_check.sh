#!/usr/bin/env bash
# The paper's models on a CUDA GPU, in one prepared run (< 8 minutes on one H100/H200 class GPU):
#   1. run_scripts/bench_fullsize.py for vitg_opt2.7b and vitg_opt6.7b (random weights, LLM in
#      bf16, ViT trained in the stage-2 step as in the paper): build, one stage-1 and one stage-2
#      step, generate (beam 5, 20 new tokens) at batch 1 and 8 with per-phase times;
#   2. 50 stage-2 iterations of vitg_opt2.7b on synthetic faces through LAVIS's runner
#      (runner_expblip_iter, one process, an nccl process group): samples/s and peak GPU memory.
# Results: printed, and as JSON under $OUT (default gpu_check_out/). The rows go in
# docs/hardware.md.
#
# Usage: bash run_scripts/gpu_check.sh            (after bash run_scripts/setup_env.sh)
#   PYTHON=/path/to/python  picks the interpreter (default: .venv/bin/python, else python3)
#   GPU_CHECK_TYPES="vitg_opt2.7b"  benchmarks fewer types; GPU_CHECK_ITERS=50, GPU_CHECK_BATCH=8
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
out="${OUT:-gpu_check_out}"
types="${GPU_CHECK_TYPES:-vitg_opt2.7b vitg_opt6.7b}"
iters="${GPU_CHECK_ITERS:-50}"
batch="${GPU_CHECK_BATCH:-8}"
mkdir -p "$out"
rm -f "$out/bench.json" "$out/runner.json"

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $python (torch.cuda.is_available() is False);" \
       "this check needs a GPU. On CPU use: $python run_scripts/bench_fullsize.py" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"bf16:", torch.cuda.is_bf16_supported())'

# Weights are random and nothing may be downloaded: every part says `random`.
export LAVIS_EXT_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$SECONDS

echo "== 1. full-size benchmark: $types"
# shellcheck disable=SC2086  # $types is a list of words
timeout 330 "$python" run_scripts/bench_fullsize.py --types $types --device cuda \
  --llm-dtype bfloat16 --train-vit yes --json "$out/bench.json" 2>&1 | tee "$out/bench.log"
echo "   ($((SECONDS - start)) s so far)"

echo "== 2. $iters stage-2 iterations of vitg_opt2.7b through the LAVIS runner (nccl, 1 process)"
timeout 240 "$python" run_scripts/bench_fullsize.py --types vitg_opt2.7b --device cuda \
  --llm-dtype bfloat16 --train-vit yes --skip-bench --runner-iters "$iters" \
  --runner-batch "$batch" --json "$out/runner.json" 2>&1 | tee "$out/runner.log" \
  | grep -E "samples/s|Error|error" || true
echo "== done in $((SECONDS - start)) s; results in $out/ (bench.json, runner.json)"
[ -s "$out/runner.json" ] && [ -s "$out/bench.json" ]
