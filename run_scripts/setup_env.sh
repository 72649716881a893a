#!/usr/bin/env bash
# Create (or update) the project's virtual environment: torch first, then lavis_ext with the
# pinned working set in requirements/constraints.txt (LAVIS 1.0.2 needs numpy < 2 and more).
# Usage: bash run_scripts/setup_env.sh [VENV_DIR]   (default .venv; $PYTHON picks the python)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.lavis_ext-installed"
want="$(cat setup.py requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
# A current transformers beside the LAVIS stack, for `expblip export-hf`'s equivalence test
# (requirements/hf-current.txt; put first on PYTHONPATH, torch and numpy still from the venv).
hf_current() {
  local dir=.cache/hf-current want_hf
  want_hf="$(sha256sum requirements/hf-current.txt | cut -d' ' -f1)"
  [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want_hf" ] && return 0
  rm -rf "$dir"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
    --target "$dir" -r requirements/hf-current.txt
  echo "$want_hf" > "$dir/.installed"
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  hf_current
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q
     -c requirements/constraints.txt)
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -e ".[test]"
# MTCNN face detection for `expblip describe`/`serve` (weights inside the wheel). Its metadata
# pins torch < 2.3, but it runs on this torch, so it goes in without its dependencies.
"${pip[@]}" --no-deps facenet-pytorch==2.6.0
echo "$want" > "$stamp"
hf_current
