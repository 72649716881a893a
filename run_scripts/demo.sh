#!/usr/bin/env bash
# The README's main command: set up .venv, then run the embedded demo on CPU (`expblip demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash run_scripts/setup_env.sh
exec .venv/bin/expblip demo "$@"
