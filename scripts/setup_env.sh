#!/usr/bin/env bash
# Creates or refreshes a virtual environment from a committed lock file.
#
#   scripts/setup_env.sh [VENV_DIR] [LOCK_FILE]
#
# Python 3.10 is required (TFX 1.16 supports 3.9-3.10). The interpreter is
# found in this order: $PYTHON, `python3.10` on PATH if it really runs, then
# ~/.pyenv/versions/3.10*/bin/python3.10.
#
# The install is keyed on a hash of the lock file and pyproject.toml: when the
# stamp inside the venv matches, nothing is installed (a second run is ~free).
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${1:-.venv}"
lock="${2:-requirements.lock}"

find_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    echo "$PYTHON"; return
  fi
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys' >/dev/null 2>&1; then
    echo python3.10; return
  fi
  local candidate
  for candidate in "$HOME"/.pyenv/versions/3.10*/bin/python3.10; do
    if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
  done
}

stamp_key=$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)
stamp="$venv/.installed-$stamp_key"
if [[ -f "$stamp" ]]; then
  exit 0
fi

python_bin=$(find_python)
if [[ -z "$python_bin" ]]; then
  echo "error: Python 3.10 not found; install it (e.g. 'pyenv install 3.10') or set PYTHON=/path/to/python3.10" >&2
  exit 1
fi
version=$("$python_bin" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ "$version" != "3.10" ]]; then
  echo "error: $python_bin is Python $version; TFX 1.16 needs Python 3.10 (set PYTHON=/path/to/python3.10)" >&2
  exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating $venv with $python_bin"
  "$python_bin" -m venv "$venv"
fi
echo "setup: installing $lock into $venv (no resolver: every version is pinned)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$lock"
# The project itself, editable, so that executors import as `components.*`
# in every process (Beam workers, Airflow tasks, the KFP container).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
rm -f "$venv"/.installed-*
touch "$stamp"
echo "setup: $venv is ready"
