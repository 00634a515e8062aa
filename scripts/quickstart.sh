#!/usr/bin/env bash
# Command 1 of the README: set up .venv (if needed), then run the whole pipeline on the embedded
# default (SYNTHETIC dSprites-format data) and print the scores. Extra flags go to
# lievae_quickstart, e.g. --work_dir=DIR --overwrite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
args=("$@")
# Re-running the README command replaces the previous default run instead of refusing.
if [ ${#args[@]} -eq 0 ]; then args=(--work_dir=runs/quickstart --overwrite); fi
exec "${LIEVAE_TF_VENV:-.venv}"/bin/lievae_quickstart "${args[@]}"
