#!/usr/bin/env bash
# Run the demo on the embedded SQLite store: http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[demo]"
exec python examples/demo.py
