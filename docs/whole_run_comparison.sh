#!/bin/bash
# The whole-run comparison of docs/whole_run_comparison.md, as it was run (from the repo root,
# inside .venv, with torch: pip install -e ".[torch]"). SYNTHETIC dSprites-format data.
# Seed 0 ran 2,000 steps; seeds 1 and 2 ran 1,000 (the machine's time, see the page), in parallel.
set -euo pipefail
DATA=runs/whole_run_comparison_data
lievae_make_data --output_dir=$DATA --factor_sizes=1,3,6,10,8,8 --overwrite
run() {
  python docs/whole_run_comparison.py --data_dir=$DATA --output_dir=docs/whole_run_comparison \
      --work_dir=runs/whole_run_comparison "$@"
}
run --seeds=0 --steps=2000 &
run --seeds=1 --steps=1000 &
run --seeds=2 --steps=1000 &
wait
run --combine_only  # summary.json and whole_run_comparison.png from the three seeds' files
