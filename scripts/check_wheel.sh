#!/usr/bin/env bash
# The install recipe of docs/install.md, followed as a user would, then used: builds lievae_tf's
# wheel from a clean copy of the source, installs it by the recipe (current stack, CPU build; no
# -e) into a fresh venv, and from a directory outside the checkout runs, on tiny SYNTHETIC data,
# lievae_train with a shipped config by name -> the stock dlib_postprocess and dlib_evaluate (our
# paper_mig, its config from the wheel) -> dlib_aggregate_results, and beside it a 1-run
# lievae_sweep and a tiny lievae_quickstart (both find their shipped configs in the package).
# A step that fails is named, with its log's tail. ~7 min on 2 busy cores with a warm pip cache
# (the install is 3 of them; without the cache the stack is ~0.6 GB to download).
#
#   PYTHON=/path/to/python3.13 bash scripts/check_wheel.sh    # default: python3.13
#   KEEP=1 ...: keep the work directory (the wheel, the venv, the runs) and print where it is.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.13}
work=$(mktemp -d "${TMPDIR:-/tmp}/lievae_check_wheel.XXXXXX")
if [ -n "${KEEP:-}" ]; then trap 'echo "check_wheel: work directory kept: $work" >&2' EXIT
else trap 'rm -rf "$work"' EXIT; fi
started=$SECONDS
step() { echo "check_wheel: [$((SECONDS - started)) s] $*" >&2; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }
"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 12)' 2>/dev/null ||
  fail "$python is no Python 3.12/3.13 (the current stack's); set PYTHON=/path/to/python3.13."

# --- The wheel --------------------------------------------------------------------------------
# From a copy of the tracked and new (not ignored) files: as a fresh clone or `pip install git+…`
# builds it, and no build/ left in the checkout or reused from an older build.
step "building the wheel"
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$work/src"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --disable-pip-version-check -q)
pip_logged() {  # pip, its output (this machine's pip.conf may add warnings) in pip.log
  "${pip[@]}" "$@" >> "$work/pip.log" 2>&1 || { tail -n 30 "$work/pip.log" >&2; fail "pip $*"; }
}
pip_logged wheel --no-deps -w "$work/dist" "$work/src"
wheel=$(echo "$work"/dist/lievae_tf-*.whl)

step "checking what the wheel holds"
# Every file of the package in the source (a subpackage without __init__.py is what a wheel
# loses), the shipped gin configs, the commands, and the .pth hook at the top (site-packages).
"$work/venv/bin/python" - "$wheel" "$work/src" <<'EOF' || fail "the wheel lacks files (above)"
import glob, os, sys, zipfile
wheel, src = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
data = os.path.basename(wheel).split("-py3")[0] + ".data"
want = {os.path.relpath(p, src) for p in glob.glob(f"{src}/lievae_tf/**/*", recursive=True)
        if os.path.isfile(p)}
want |= {"lievae_tf/gin_configs/" + os.path.basename(p) for p in glob.glob(f"{src}/gin_configs/*")}
want |= {f"{data}/scripts/" + os.path.basename(p) for p in glob.glob(f"{src}/bin/lievae_*")}
want.add("lievae_tf_dlib_compat.pth")
missing = sorted(want - names)
for name in missing:
  print(f"check_wheel: not in the wheel: {name}", file=sys.stderr)
sys.exit(1 if missing else 0)
EOF

# --- The recipe (docs/install.md), from outside the checkout ------------------------------------
mkdir "$work/elsewhere"
cd "$work/elsewhere"
step "installing by the recipe: the stack, then the wheel"
pip_logged install -r "$repo/requirements-current.txt"
pip_logged install --no-deps -r "$repo/requirements-current-nodeps.txt"
pip_logged install --no-deps -r "$repo/requirements-dlib.txt"
"${pip[@]}" freeze > "$work/before.txt" 2>> "$work/pip.log"
pip_logged install "$wheel"
"${pip[@]}" freeze > "$work/after.txt" 2>> "$work/pip.log"
# The wheel's dependencies are all in the stack's set: installing it adds itself, nothing else
# (no second TensorFlow, no other version of a pinned package).
added=$(diff "$work/before.txt" "$work/after.txt" | grep '^[<>]' | grep -v '^> lievae[_-]tf[@ =]' || true)
[ -z "$added" ] || fail "installing the wheel changed the stack's packages: $added"

export PATH="$work/venv/bin:$PATH" DISENTANGLEMENT_LIB_DATA="$work/elsewhere/data"
export TF_CPP_MIN_LOG_LEVEL=1
run() {  # a command, its output in logs/NAME.log; on failure the log's tail
  local name=$1; shift
  mkdir -p logs
  if ! "$@" > "logs/$name.log" 2>&1; then
    tail -n 25 "logs/$name.log" >&2
    fail "$name: $*"
  fi
}
run import python -c "
import os, sys, lievae_tf
site = os.path.realpath(os.path.join(sys.prefix, 'lib'))
assert os.path.realpath(lievae_tf.__file__).startswith(site), f'lievae_tf from {lievae_tf.__file__}, not the venv'"

run make_data lievae_make_data --output_dir="$DISENTANGLEMENT_LIB_DATA" --factor_sizes=1,3,2,4,4,4
small=("model.training_steps = 6" "model.batch_size = 8" "model.eval_steps = 2"
       "training.checkpoint_every = 3" "training.log_every = 2")
cfg=$(python -c "from lievae_tf.evaluation import registry; print(registry.dlib_config_dir())")
paper_mig=$(python -c "from lievae_tf.evaluation import registry; print(registry.get('paper_mig').gin_config)")

by_hand() {  # one model, step by step, as a user types it
  run train lievae_train --gin_config=dsprites.gin --model_dir=model \
    "${small[@]/#/--gin_bindings=}"
  [ -f model/tfhub/saved_model.pb ] || fail "lievae_train exported no model/tfhub"
  run postprocess dlib_postprocess --model_dir=model --output_dir=model/postprocessed/mean \
    --gin_config="$cfg/postprocess_configs/mean.gin"
  run evaluate_paper_mig dlib_evaluate --input_dir=model/postprocessed/mean \
    --output_dir=model/metrics/mean/paper_mig --gin_config="$paper_mig" \
    --gin_bindings="paper_mig.num_train = 300"
  run aggregate dlib_aggregate_results \
    --result_file_pattern="model/metrics/*/*/results/aggregate/evaluation.json" \
    --output_path=results.json
}

# Three independent pipelines side by side: their processes spend most of their time starting
# TensorFlow, on one core each. The sweep (comparison_synthetic: dsprites.gin) and the quickstart
# (quickstart.gin) find their configs in the package.
step "side by side: (1) lievae_train --gin_config=dsprites.gin -> stock dlib_postprocess -> dlib_evaluate (paper_mig) -> dlib_aggregate_results; (2) lievae_sweep, 1 run; (3) lievae_quickstart, shortened"
by_hand & pids=($!)
run sweep lievae_sweep --study=comparison_synthetic --settings=clg_vae --seeds=0 \
  --output_dir=sweep "${small[@]/#/--gin_bindings=}" --metrics=mig \
  --metric_bindings="mig.num_train = 300" & pids+=($!)
run quickstart lievae_quickstart --work_dir=quickstart --metrics=mig \
  "${small[@]/#/--gin_bindings=}" & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || fail "a pipeline failed (above)"

# The aggregations hold the scores asked for, each a number in [0, 1].
run scores python - <<'EOF'
import math
from disentanglement_lib.utils import aggregate_results
for path, want in (("results.json", {"paper_mig"}), ("sweep/results.json", {"mig"}),
                   ("quickstart/results.json", {"mig"})):
  rows = aggregate_results.load_aggregated_json_results(path)
  names = {n.strip("'\"") for n in rows["evaluation_config.evaluation.name"]}
  assert names == want, f"{path}: evaluations {names}, expected {want}"
  for score in rows["evaluation_results.discrete_mig"]:
    assert 0 <= score <= 1 and math.isfinite(score), f"{path}: MIG {score}"
  print(path, dict(zip(rows["evaluation_config.evaluation.name"], rows["evaluation_results.discrete_mig"])))
EOF
grep '^[a-z/]*results.json' logs/scores.log >&2
step "passed: the wheel, installed by docs/install.md's recipe, runs the pipeline outside the checkout"
