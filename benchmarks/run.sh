#!/usr/bin/env bash
# One command for the whole benchmark: installs what it needs, runs every
# measurement, writes docs/benchmarks.md and docs/benchmarks/*.png.
#
#   benchmarks/run.sh            # full run (~15 minutes on 2 cores)
#   benchmarks/run.sh --quick    # smoke run (~3 minutes)
#
# Uses the Python of the active virtualenv (else ./.venv, else python3) and
# pip-installs benchmarks/requirements.txt into it; apt-installs wrk if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=${PYTHON:-python3}
fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq wrk
fi

"$PY" -m pip install -q -r benchmarks/requirements.txt
PYTHON="$PY" bash scripts/install/ravendb.sh  # sw-ravendb's RavenDB 4.1 server (a no-op once there)
"$PY" -m benchmarks.bench "$@"
"$PY" -m benchmarks.increments  # lost updates under the WSGI worker kinds
"$PY" -m benchmarks.metrics_overhead  # what metrics cost when disabled
"$PY" -m benchmarks.bench --django "$@"  # Django's engines and sessionware.django (section 6)
