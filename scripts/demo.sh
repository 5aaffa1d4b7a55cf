#!/usr/bin/env bash
# Run the demo on the embedded SQLite store: http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh demo
exec python examples/demo.py
