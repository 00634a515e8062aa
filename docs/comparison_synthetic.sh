#!/bin/bash
# The small-scale comparison of docs/comparison_synthetic.md, exactly as it was run (from the repo
# root, inside .venv). SYNTHETIC dSprites-format data: not DeepMind's dSprites.
set -euo pipefail
export DISENTANGLEMENT_LIB_DATA=runs/comparison_synthetic_data
lievae_make_data --output_dir=$DISENTANGLEMENT_LIB_DATA --factor_sizes=1,3,6,10,8,8 --overwrite
# clg_vae, no_exp, beta_vae; 1,000 steps at batch 64 each; seeds 0-2; small metric sizes.
lievae_sweep --study=comparison_synthetic --seeds=0-2 --output_dir=runs/comparison_synthetic --jobs=2
lievae_collect --aggregated_json=runs/comparison_synthetic/results.json \
    --config_variables=model.model,LieGroupVAE.no_exp --output_dir=docs/comparison_synthetic
