#!/usr/bin/env bash
# Run Pendra's benchmarks (bench/, not part of the test suite): sets up .venv with the `bench` extra
# (py-spy and pyinstrument, for profiling), then runs `python -m bench` with the given arguments,
# e.g. `bash scripts/bench.sh --quick` or `bash scripts/bench.sh --only latency streaming`.
# Profile the control plane under load with `.venv/bin/python -m bench.profile`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PENDRA_EXTRAS=${PENDRA_EXTRAS:-bench} bash scripts/setup.sh
exec .venv/bin/python -m bench "$@"
