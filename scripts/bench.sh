#!/usr/bin/env bash
# Run Pendra's benchmarks (bench/, not part of the test suite): sets up .venv with the `bench` extra
# (py-spy and pyinstrument, for profiling), makes LiteLLM's proxy a virtualenv of its own
# (.venv-litellm, once; never in .venv: its pinned fastapi/uvicorn/pydantic would change Pendra's)
# for the same-run comparison, then runs `python -m bench` with the given arguments, e.g.
# `bash scripts/bench.sh --quick` or `bash scripts/bench.sh --only latency streaming`.
# PENDRA_BENCH_LITELLM=0 skips LiteLLM. Profile the control plane alone with
# `.venv/bin/python -m bench.profile`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PENDRA_EXTRAS=${PENDRA_EXTRAS:-bench} bash scripts/setup.sh

wants_litellm=1
if [ "${PENDRA_BENCH_LITELLM:-1}" = "0" ]; then
  wants_litellm=0
elif [[ " $* " == *" --only "* && " $* " != *" litellm "* ]]; then
  wants_litellm=0  # --only without litellm: nothing to install
fi
if [ "$wants_litellm" = 1 ] && [ ! -f .venv-litellm/.installed ]; then
  echo "Installing LiteLLM's proxy into .venv-litellm for the comparison (once)..."
  if "${PYTHON:-python3}" -m venv .venv-litellm \
      && .venv-litellm/bin/python -m pip install --quiet 'litellm[proxy]' \
         >.venv-litellm/install.log 2>&1 \
      && LITELLM_LOCAL_MODEL_COST_MAP=True .venv-litellm/bin/litellm --version >/dev/null 2>&1; then
    touch .venv-litellm/.installed
  else
    echo "LiteLLM could not be installed here (see .venv-litellm/install.log); the benchmark" \
         "will say so and run the rest." >&2
  fi
fi
exec .venv/bin/python -m bench "$@"
