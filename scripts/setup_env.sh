#!/usr/bin/env bash
# Creates or refreshes .venv (LIEVAE_TF_VENV=DIR: another directory) from the project's own files.
# Idempotent: when nothing that defines the environment changed since the last run, it does nothing.
#
# Stack (docs/environment.md): "current" (TF 2.21 with tf_keras, tensorflow-hub 0.16, gin-config 0.5,
# numpy 2; Python 3.10-3.13), the default; "pinned" (TF 2.15.1, tensorflow-hub 0.15, gin-config 0.4,
# numpy 1.26; Python 3.9-3.11) with LIEVAE_TF_STACK=pinned, or where no Python 3.10+ is found.
# Interpreter: PYTHON=..., else the newest python3.1x on PATH that the stack supports, else python3.
# torch: its CPU build (torch==2.13.0+cpu, for the parity tests and lievae_import_torch) where pip
# finds that wheel (here: on local disk, for Python 3.11); PyPI has only its CUDA build, several GB,
# so elsewhere torch is left out and the tests that need it skip, saying why.
# TensorFlow build: the GPU build when `nvidia-smi -L` lists a GPU, else the CPU build;
# LIEVAE_TF_BUILD=cpu|gpu overrides. Requirements: requirements.txt / requirements-gpu.txt (pinned,
# both over requirements-common.txt), requirements-current.txt / requirements-current-gpu.txt
# (current). Switching stack or build recreates .venv: their wheels must not share one.
#
#   --plan     print the choices and the pip commands, then stop (installs nothing, no network)
#   --dry-run  the plan, then pip's resolver report for that set (runs/requirements_report_BUILD.json),
#              from a throwaway venv: needs the registry, installs nothing.
#              scripts/check_gpu_requirements.sh runs it for the GPU set.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LIEVAE_TF_VENV:-.venv}  # where the environment goes (CI keeps one per stack)

mode=${1:-install}
case "$mode" in
  install|--plan|--dry-run) ;;
  *) echo "setup_env: unknown argument '$mode': use no argument, --plan or --dry-run" >&2; exit 2 ;;
esac

die() { echo "setup_env: $*" >&2; exit 1; }
say() { echo "setup_env: $*" >&2; }

# --- Which TensorFlow build ---------------------------------------------------------------------
case "${LIEVAE_TF_STACK:-}" in
  ""|pinned|current) ;;
  *) die "LIEVAE_TF_STACK=$LIEVAE_TF_STACK is neither pinned nor current: set one of them, or unset it for the current stack." ;;
esac
case "${LIEVAE_TF_BUILD:-}" in
  cpu|gpu) build=$LIEVAE_TF_BUILD; why="LIEVAE_TF_BUILD=$build" ;;
  "")
    # A broken driver can make nvidia-smi hang; a GPU it cannot list is no GPU to build for.
    gpus=0
    if command -v nvidia-smi >/dev/null; then
      gpus=$(timeout 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    fi
    if [ "$gpus" -gt 0 ]; then build=gpu; why="nvidia-smi -L lists $gpus GPU(s)"
    else build=cpu; why="no GPU listed by nvidia-smi -L"; fi ;;
  *) die "LIEVAE_TF_BUILD=$LIEVAE_TF_BUILD is neither cpu nor gpu: set one of them, or unset it to follow nvidia-smi." ;;
esac

# --- Is $venv up to date? -------------------------------------------------------------------------
stamp_inputs() {
  # Everything that decides what gets installed (bin/ scripts are copied at install time).
  echo "tensorflow build: $build; stack: ${LIEVAE_TF_STACK:-} python: ${PYTHON:-}"
  cat requirements.txt requirements-common.txt requirements-gpu.txt requirements-current.txt \
    requirements-current-common.txt requirements-current-gpu.txt requirements-current-nodeps.txt \
    requirements-dlib.txt pyproject.toml setup.py scripts/setup_env.sh
  find bin -name 'lievae_*' -type f | sort | xargs -r cat
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
stamp=$venv/.lievae_env_stamp
built=$venv/.lievae_tf_build  # the build installed in $venv (absent: made before the GPU build existed)
built_stack=$venv/.lievae_tf_stack  # the stack installed in $venv (absent: pinned, made before the current stack)
if [ "$mode" = install ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x $venv/bin/python ]; then
  say "$venv is up to date: the $(cat "$built_stack") stack, $(sed -n 's/^version *= *\([0-9]*\.[0-9]*\).*/Python \1/p' $venv/pyvenv.cfg), TensorFlow's $build build"
  exit 0
fi

# --- Which interpreter ----------------------------------------------------------------------------
python_version() {  # "3.11" for a working interpreter, nothing (and status 1) otherwise
  timeout 30 "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null | tail -n1
}
stack_for() {  # the stack for Python version $1: LIEVAE_TF_STACK, else current (pinned on 3.9); nothing if none fits
  case "${LIEVAE_TF_STACK:-}" in
    pinned) case "$1" in 3.9|3.10|3.11) echo pinned ;; esac ;;
    current) case "$1" in 3.10|3.11|3.12|3.13) echo current ;; esac ;;
    *) case "$1" in 3.10|3.11|3.12|3.13) echo current ;; 3.9) echo pinned ;; esac ;;
  esac
}
supported() { [ -n "$(stack_for "$1")" ]; }
newest_supported() {  # the newest python3.1x on PATH that starts, is what its name says and fits
  local name
  for name in python3.13 python3.12 python3.11 python3.10 python3.9; do
    command -v "$name" >/dev/null || continue
    [ "$(python_version "$name" || true)" = "${name#python}" ] && supported "${name#python}" &&
      { echo "$name"; return 0; }
  done
  return 1
}
interpreters_on_path() {  # "python3 (3.13), python3.11 (3.11, supported), ...": each name once, first on PATH
  local seen=" " out="" dir f name v
  local IFS=:
  for dir in $PATH; do
    for f in "$dir"/python3 "$dir"/python3.[0-9]*; do
      name=${f##*/}
      [[ $name =~ ^python3(\.[0-9]+)?$ ]] && [ -x "$f" ] || continue
      [[ $seen == *" $name "* ]] && continue
      seen="$seen$name "
      v=$(python_version "$f" || true)
      supported "$v" && v="$v, supported"
      out="$out${out:+, }$name (${v:-does not start})"
    done
  done
  echo "${out:-none}"
}

wrong_tf_wheel() {  # the TF distribution the chosen build must not hold (CPU: tensorflow-cpu on both stacks)
  if [ "$build" = cpu ]; then echo tensorflow; else echo tensorflow_cpu; fi
}
# An existing $venv is kept if its interpreter is supported and it holds the chosen build.
venv_action=create
if [ -x $venv/bin/python ]; then
  venv_version=$(python_version $venv/bin/python || true)
  venv_stack=$(cat "$built_stack" 2>/dev/null || echo pinned)
  if [ -n "${PYTHON:-}" ] && [ "$(python_version "$PYTHON" || true)" != "$venv_version" ]; then
    venv_action="recreate (PYTHON=$PYTHON is not its Python $venv_version)"
  elif ! supported "$venv_version"; then venv_action="recreate (its Python is ${venv_version:-broken})"
  elif [ "$(stack_for "$venv_version")" != "$venv_stack" ]; then
    if [ "$venv_stack" = pinned ] && [ -z "${LIEVAE_TF_STACK:-}" ]; then
      venv_action="recreate (it holds the pinned stack, the old default on Python $venv_version: the default is now the current stack; LIEVAE_TF_STACK=pinned keeps the pinned one)"
    else
      venv_action="recreate (it holds the $venv_stack stack)"
    fi
  elif [ "$(cat "$built" 2>/dev/null || echo cpu)" != "$build" ]; then
    venv_action="recreate (it holds the $(cat "$built" 2>/dev/null || echo cpu) build)"
  elif compgen -G "$venv/lib/python*/site-packages/$(wrong_tf_wheel)-[0-9]*.dist-info" >/dev/null; then
    # A current-stack .venv made when its CPU build was `tensorflow`: both wheels install the same
    # files, so installing tensorflow-cpu over it would leave a mix.
    venv_action="recreate (it holds the $(wrong_tf_wheel) wheel, not the $build build's)"
  elif [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then venv_action="up to date"
  else venv_action=refresh; fi
fi

if [ "$venv_action" = refresh ] || [ "$venv_action" = "up to date" ]; then
  python=$venv/bin/python
  version=$venv_version
  python_why="the Python of the existing $venv"
else
  if [ -n "${PYTHON:-}" ]; then
    command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON is not an interpreter on PATH or a path to one; interpreters on PATH: $(interpreters_on_path)."
    python=$PYTHON
    python_why="PYTHON=$PYTHON"
  elif python=$(newest_supported); then
    python_why="the newest Python on PATH that the ${LIEVAE_TF_STACK:-current} stack supports; PYTHON=... overrides"
  else
    python=python3
    python_why="no python3.9-python3.13 on PATH; PYTHON=... overrides"
  fi
  version=$(python_version "$python" || true)
  if ! supported "$version"; then
    get=3.13
    case "${LIEVAE_TF_STACK:-}" in
      pinned) range="3.9-3.11 (the pinned stack, TF 2.15)"; get=3.11 ;;
      current) range="3.10-3.13 (the current stack, TF 2.21)" ;;
      *) range="3.9-3.13 (3.10-3.13: the current stack, TF 2.21; 3.9: the pinned stack, TF 2.15)" ;;
    esac
    die "$python (Python ${version:-?: it does not start}) cannot run this project: it needs Python $range. Get one (apt-get install python$get python$get-venv, pyenv install $get, uv python install $get, or conda create -n py${get/./} python=$get) and rerun with PYTHON=/path/to/python$get. Interpreters on PATH: $(interpreters_on_path)."
  fi
  if ! timeout 30 "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    die "Python $version ($python) has no venv/ensurepip, which $venv needs: install it (Debian/Ubuntu: apt-get install python$version-venv) or use another interpreter with PYTHON=..."
  fi
fi

stack=$(stack_for "$version")
case "${LIEVAE_TF_STACK:-}/$stack" in
  pinned/*|current/*) stack_why="LIEVAE_TF_STACK=$LIEVAE_TF_STACK" ;;
  /current) stack_why="the default; LIEVAE_TF_STACK=pinned gives TF 2.15, for hub.Module in TF1 code" ;;
  /pinned) stack_why="Python $version: the current stack needs 3.10+" ;;
esac
case "$stack/$build" in
  pinned/cpu) requirements=requirements.txt ;;
  pinned/gpu) requirements=requirements-gpu.txt ;;
  current/cpu) requirements=requirements-current.txt ;;
  current/gpu) requirements=requirements-current-gpu.txt ;;
esac
extras=test
install_steps=("-r $requirements")
# tf-keras and tensorflow-hub require the `tensorflow` distribution, which the CPU build's
# tensorflow-cpu is not: without --no-deps pip would add TF's CUDA wheel beside it.
[ "$stack" = current ] && install_steps+=("--no-deps -r requirements-current-nodeps.txt")
install_steps+=("--no-deps -r requirements-dlib.txt" "-e .[$extras]")
# The `+cpu` local version is not on PyPI: pip finds it only where the CPU wheel is at hand.
torch_step="--only-binary=:all: torch==2.13.0+cpu"

if [ "$mode" != install ]; then
  say "TensorFlow build: $build ($why; LIEVAE_TF_BUILD=cpu|gpu overrides)"
  say "Python: $python ($version; $python_why)"
  say "stack: $stack ($stack_why)"
  say "$venv: $venv_action"
  for step in "${install_steps[@]}"; do say "pip install $step"; done
  say "pip install $torch_step (if pip finds it; else without torch)"
  say "stamp: $want"
fi
if [ "$mode" = --plan ]; then exit 0; fi

if [ "$mode" = --dry-run ]; then
  # A throwaway venv of the same interpreter, so the resolver starts from nothing, as $venv would.
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  "$python" -m venv "$scratch/venv"
  report=runs/requirements_report_${stack}_$build.json
  mkdir -p runs
  # The project itself with its extras, as the last step installs it (dlib is --no-deps: nothing to resolve).
  "$scratch/venv/bin/python" -m pip install --disable-pip-version-check -q --dry-run --ignore-installed \
    --report "$report" -r "$requirements" ".[$extras]"
  "$scratch/venv/bin/python" - "$report" <<'EOF' >&2
import json, sys
installs = json.load(open(sys.argv[1]))["install"]
pins = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
tf = {k: v for k, v in pins.items() if k.startswith("tensorflow") and k != "tensorflow-estimator"}
cuda = sorted(f"{k}=={v}" for k, v in pins.items() if k.startswith("nvidia-"))
print(f"setup_env: resolves: {len(pins)} packages; " + ", ".join(f"{k}=={v}" for k, v in sorted(tf.items())))
print(f"setup_env: CUDA wheels: {', '.join(cuda) or 'none'}")
print(f"setup_env: report: {sys.argv[1]}")
EOF
  exit 0
fi

say "building $venv: the $stack stack ($stack_why) on Python $version ($python, $python_why), TensorFlow's $build build ($why; LIEVAE_TF_BUILD=cpu|gpu overrides); a few minutes the first time"
[ "$venv_action" = create ] || say "$venv: $venv_action"
case "$venv_action" in
  create) "$python" -m venv $venv ;;
  recreate*) "$python" -m venv --clear $venv ;;
esac
set -f  # each step is split into pip's arguments, and `.[test,...]` is no glob
for step in "${install_steps[@]}"; do
  # shellcheck disable=SC2086
  $venv/bin/python -m pip install --disable-pip-version-check -q $step
done
if ! $venv/bin/python -m pip install --disable-pip-version-check -q $torch_step >/dev/null 2>&1; then
  say "torch: pip finds no CPU build of torch 2.13.0 for Python $version here (PyPI has only its CUDA build, several GB): left out; the tests that need it skip, saying so"
fi
set +f
echo "$build" > "$built"
echo "$stack" > "$built_stack"
# The .pth hook that makes the stock dlib_* commands work on either stack (lievae_tf/dlib/shims.py).
$venv/bin/python -c "from lievae_tf.dlib import shims; shims.install_site_hook()"
echo "$want" > "$stamp"
say "$venv ready"
