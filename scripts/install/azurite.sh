#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, npm `azurite`) for the
# AzureTableStore tests, into .tools/azurite/ (gitignored). A fast no-op when
# it is there already. Node.js comes from Debian's `nodejs` and `npm` when
# missing, and Debian's `faketime`, under which a test runs azurite-table on a
# slowed clock (tests/support/servers/azurite.py: ETags that repeat). The tests start
# Azurite themselves.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=3.35.0
prefix=.tools/azurite
missing=()
command -v npm > /dev/null || missing+=(nodejs npm)
command -v faketime > /dev/null || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi
if [ -x "$prefix/node_modules/.bin/azurite-table" ] \
    && grep -q "\"version\": \"$VERSION\"" "$prefix/node_modules/azurite/package.json" 2>/dev/null; then
    exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$VERSION" > /dev/null
