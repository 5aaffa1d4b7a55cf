#!/usr/bin/env bash
# Run a demo on the embedded SQLite store:
#   bash scripts/demo.sh          Starlette under uvicorn, http://127.0.0.1:8000
#   bash scripts/demo.sh flask    Flask under Werkzeug,    http://127.0.0.1:8001
#   bash scripts/demo.sh django   Django under runserver,  http://127.0.0.1:8002
# PORT, DEMO_DB and DEMO_SECRET override the port, the SQLite file and the key.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-asgi}" in
    asgi) demo=examples/demo.py ;;
    flask) demo=examples/flask_demo.py ;;
    django) demo=examples/django_demo.py ;;
    *) echo "usage: bash scripts/demo.sh [asgi|flask|django]" >&2; exit 2 ;;
esac
. scripts/_venv.sh demo
exec python "$demo"
