#!/usr/bin/env bash
# Command 2 of the README (and what CI runs): set up .venv (if needed), then run the test suite.
# Extra arguments go to pytest, e.g. -k export.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
