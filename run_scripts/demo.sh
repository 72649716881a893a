#!/usr/bin/env bash
# The README's main command: set up .venv, then run the embedded demo on CPU (`expblip demo`).
# LAVIS_EXT_STACK=current runs it on the current stack (.venv-current; docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${LAVIS_EXT_STACK:-paper}" in
  paper) venv=.venv ;;
  current) venv=.venv-current ;;
  *) echo "demo.sh: LAVIS_EXT_STACK must be paper or current" >&2; exit 2 ;;
esac
bash run_scripts/setup_env.sh --stack "${LAVIS_EXT_STACK:-paper}"
exec "$venv/bin/expblip" demo "$@"
