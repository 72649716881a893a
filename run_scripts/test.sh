#!/usr/bin/env bash
# The README's test command, on both stacks (docs/install.md); no GPU, no hub.
# The whole suite on the paper stack (.venv: LAVIS 1.0.2's 2023 pins, the demo's default), then
# the whole suite on the current stack (.venv-current: transformers 4.57, numpy 2). Both, set-up
# included, took 13 min on 2 cores (fresh clone, pip cache warm). TEST_STACKS=paper or
# TEST_STACKS=current runs one stack. Extra arguments go to each pytest run (.ci/run passes
# -p no:cacheprovider).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
stacks="${TEST_STACKS:-paper current}"
rc=0
for stack in $stacks; do
  bash run_scripts/setup_env.sh --stack "$stack"
done
for stack in $stacks; do
  case "$stack" in
    paper) python=.venv/bin/python ;;
    current) python=.venv-current/bin/python ;;
    *) echo "test.sh: TEST_STACKS holds paper and/or current, not '$stack'" >&2; exit 2 ;;
  esac
  echo "== $stack stack: $python -m pytest tests"
  "$python" -m pytest -q "$@" tests || rc=$?
done
exit "$rc"
