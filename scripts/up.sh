#!/usr/bin/env bash
# The main job: set up, then run `pendra up` (control plane + one worker, SQLite under ~/.pendra).
# Extra arguments go to `pendra up`, e.g. scripts/up.sh --port 9000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pendra up "$@"
