#!/usr/bin/env bash
# Sets up ./.venv with the test dependencies and runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k face`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# Two workers: the suite takes about half the time on 2 cores (subprocess tests included).
exec .venv/bin/python -m pytest tests -q -n 2 "$@"
