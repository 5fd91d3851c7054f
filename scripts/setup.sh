#!/usr/bin/env bash
# Set up everything Pendra needs on this machine: a virtualenv in .venv with the package installed.
# Idempotent: it reinstalls only when pyproject.toml changed. Sourced by scripts/up.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
extras=${PENDRA_EXTRAS:-}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "Pendra needs Python 3.11 or newer (found: $("$PY" --version 2>&1))." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.pendra-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  target="."
  [ -n "$extras" ] && target=".[${extras}]"
  .venv/bin/python -m pip install --quiet -e "$target" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import pendra' # fail loudly if the install did not work
  echo "$want" > "$stamp"
fi
