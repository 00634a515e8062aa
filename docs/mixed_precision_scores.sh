#!/bin/bash
# The float32 vs mixed_bfloat16 score comparison of docs/mixed_precision_scores.md, as it was run
# (from the repo root, inside .venv). SYNTHETIC dSprites-format data: not DeepMind's dSprites.
# RUNS (default runs/mixed_precision_scores) holds the data and the model_dirs; the run of the page
# used RUNS=/work/scratch/bf16_study under `flock -s /tmp/lievae_cpu.lock` (a shared machine).
set -euo pipefail
RUNS=${RUNS:-runs/mixed_precision_scores}
export DISENTANGLEMENT_LIB_DATA=$RUNS/data
mkdir -p "$RUNS"
lievae_make_data --output_dir="$DISENTANGLEMENT_LIB_DATA" --overwrite  # default grid 1,3,6,10,8,8

# One sweep per precision: the paper's dSprites model (gin_configs/dsprites.gin via the small
# study's clg_vae setting, which shortens the run to batch 64 and checkpoints every 500 steps),
# 2,000 steps, seeds 0-2, scored by dlib's protocol and the paper code's at the small sizes.
# The two sweeps run side by side, so that seed k of both precisions trains under the same load.
sweep() {
  lievae_sweep --study=comparison_synthetic --settings=clg_vae --seeds=0-2 \
      --output_dir="$RUNS/$1" --metrics=factor_vae,mig,sap,dci --protocol=both \
      --gin_bindings="model.training_steps = 2000" --gin_bindings="training.precision = '$1'"
}
sweep float32 > "$RUNS/float32.log" 2>&1 &
float32=$!
sweep mixed_bfloat16 > "$RUNS/mixed_bfloat16.log" 2>&1 &
mixed_bfloat16=$!
wait $float32
wait $mixed_bfloat16

# Both sweeps' evaluations in one table (the stock aggregation), then the CSV, plot and summary.
dlib_aggregate_results \
    --result_file_pattern="$RUNS/*/clg_vae/seed*/metrics/*/*/results/aggregate/evaluation.json" \
    --output_path="$RUNS/results.json"
python docs/mixed_precision_scores.py --aggregated_json="$RUNS/results.json" --output_dir=docs
