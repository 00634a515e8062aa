#!/usr/bin/env bash
# Creates or refreshes .venv from the project's own files. Idempotent: when nothing that
# defines the environment changed since the last run, it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

stamp_inputs() {
  # Everything that decides what gets installed (bin/ scripts are copied at install time).
  cat requirements.txt requirements-dlib.txt setup.py scripts/setup_env.sh
  find bin -name 'lievae_*' -type f | sort | xargs -r cat
}
want=$(stamp_inputs | sha256sum | cut -d' ' -f1)
stamp=.venv/.lievae_env_stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi

echo "setup_env: building .venv (a few minutes the first time)" >&2
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" -r requirements.txt
"${PIP[@]}" --no-deps -r requirements-dlib.txt
# With its extras' dependencies: pytest, and torch (the CPU build on local disk; the parity tests
# and lievae_import_torch need it).
"${PIP[@]}" -e ".[test,torch]"
# The .pth hook that makes the stock dlib_* commands work on Python 3.11 / TF 2.15.
.venv/bin/python -c "import lievae_tf.compat as c; c.install_site_hook()"
echo "$want" > "$stamp"
echo "setup_env: .venv ready" >&2
