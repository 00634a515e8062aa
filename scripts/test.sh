#!/usr/bin/env bash
# Command 2 of the README (and what CI runs): set up .venv (if needed), then run the test suite.
# Extra arguments go to pytest, e.g. -k export (`-n 0` runs in this process alone).
# Tests run in parallel worker processes (pytest-xdist); tests sharing a module-scoped fixture (a
# trained model) stay on one worker, so it is built once (tests/conftest.py groups them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${LIEVAE_TF_VENV:-.venv}"/bin/python -m pytest --numprocesses=auto --maxprocesses=4 --dist=loadgroup "$@"
