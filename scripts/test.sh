#!/usr/bin/env bash
# Command 2 of the README (and what CI runs): set up .venv (if needed), then run the test suite.
# Extra arguments go to pytest, e.g. -k export (`-n 0` runs in this process alone).
# Test files run in parallel worker processes (pytest-xdist), one file per worker at a time so that a
# module's shared fixtures (a trained model) are built once; most tests wait on real subprocesses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest --numprocesses=auto --maxprocesses=4 --dist=loadfile "$@"
