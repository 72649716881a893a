#!/usr/bin/env bash
# The README's test command: set up .venv, then run the whole test suite (no GPU, no hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash run_scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@" tests
