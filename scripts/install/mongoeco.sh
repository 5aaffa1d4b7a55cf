#!/usr/bin/env bash
# mongoeco, the wire-protocol MongoDB emulator the MongoDBStore tests run
# against (no real mongod can be installed here), in a venv of its own under
# .tools/: it needs Python >= 3.13, the project's venv may be older.
# Idempotent, and a fast no-op once installed. A real server instead: set
# MONGODB_URL and the same suites run against it as well.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION="${MONGOECO_VERSION:-4.11.0}"
VENV=.tools/mongoeco-venv
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "
import importlib.metadata as m, sys
import bson; sys.exit(m.version('mongoeco') != '$VERSION')" 2> /dev/null; then
    exit 0
fi
python313=""
for candidate in python3.13 python3.14 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3; do
    if command -v "$candidate" > /dev/null 2>&1 && "$candidate" -c \
        'import sys; sys.exit(sys.version_info < (3, 13))' 2> /dev/null; then
        python313="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python313" ]; then
    echo "mongoeco needs Python >= 3.13 (none found on PATH or under pyenv)" >&2
    exit 1
fi
rm -rf "$VENV"
"$python313" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "mongoeco[wire]==$VERSION"
