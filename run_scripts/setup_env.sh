#!/usr/bin/env bash
# Create (or update) a virtual environment for one of the two pinned stacks (docs/install.md):
#   paper    LAVIS 1.0.2 with its 2023 pins (transformers 4.26.1, numpy < 2): exact reproduction.
#            requirements/constraints.txt, default folder .venv
#   current  LAVIS 1.0.2 installed without its pins (--no-deps) on current transformers, numpy 2
#            and an opencv built for it; the fixes that needs are in lavis_ext/compat.
#            requirements/constraints-current.txt, default folder .venv-current
# Usage: bash run_scripts/setup_env.sh [--stack paper|current] [VENV_DIR]
#        (default stack: paper; $PYTHON picks the python). Rerunning it with unchanged inputs
#        does nothing; an existing venv is updated in place, never deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=paper
if [ "${1:-}" = "--stack" ]; then
  stack="${2:-}"; shift 2 || { echo "setup_env.sh: --stack needs paper or current" >&2; exit 2; }
elif [[ "${1:-}" == --stack=* ]]; then
  stack="${1#--stack=}"; shift
fi
case "$stack" in
  paper) constraints=requirements/constraints.txt; default_venv=.venv ;;
  current) constraints=requirements/constraints-current.txt; default_venv=.venv-current ;;
  *) echo "setup_env.sh: --stack must be paper or current, not '$stack'" >&2; exit 2 ;;
esac
venv="${1:-$default_venv}"
python="${PYTHON:-python3}"
stamp="$venv/.lavis_ext-installed"
want="$(cat setup.py "$constraints" run_scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
# A current transformers beside either stack, for `expblip export-hf`'s equivalence test
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
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$constraints")
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
if [ "$stack" = paper ]; then
  "${pip[@]}" -e ".[paper,test]"
else
  # LAVIS 1.0.2's metadata pins transformers < 4.27 and opencv-python-headless 4.5.5 (numpy 1
  # only): it goes in without them, and setup.py lists what `import lavis` really needs.
  "${pip[@]}" --no-deps salesforce-lavis==1.0.2
  "${pip[@]}" -e ".[current,test]"
fi
# MTCNN face detection for `expblip describe`/`serve` (weights inside the wheel). Its metadata
# pins torch < 2.3, but it runs on this torch, so it goes in without its dependencies.
"${pip[@]}" --no-deps facenet-pytorch==2.6.0
echo "$want" > "$stamp"
hf_current
