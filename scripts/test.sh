#!/usr/bin/env bash
# The whole test suite: set up (venv, test packages, PostgreSQL up), then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k emulator
set -euo pipefail
cd "$(dirname "$0")/.."
PENDRA_EXTRAS=test bash scripts/setup.sh

# PostgreSQL on 127.0.0.1:5432 (trust auth, database "test") backs the store tests.
if ! command -v pg_isready >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# --- systemd units (tests/test_deploy.py): `systemd-analyze verify` comes with Debian's systemd ------
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

# --- browser tests (tests/browser): Debian's Chromium, driven by the playwright package ---------
# `playwright install` downloads its own browser build, which this project never does.
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# --- end of browser tests block ------------------------------------------------------------------

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.
exit $status
