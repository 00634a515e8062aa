#!/usr/bin/env bash
# Does the GPU build's requirement set resolve? pip's resolver report for it (nothing is installed),
# written to runs/requirements_report_gpu.json, with a summary: the TF distribution and the CUDA
# wheels it brings. Needs the package registry and a minute or two, so CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/.."
LIEVAE_TF_BUILD=gpu exec bash scripts/setup_env.sh --dry-run
