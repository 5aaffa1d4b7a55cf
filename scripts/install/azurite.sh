#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator, npm `azurite`) for the
# AzureTableStore tests, into .tools/azurite/ (gitignored). A fast no-op when
# it is there already. Node.js comes from Debian's `nodejs` and `npm` when
# missing. The tests start it themselves (tests/servers/azurite.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=3.35.0
prefix=.tools/azurite
if [ -x "$prefix/node_modules/.bin/azurite-table" ] \
    && grep -q "\"version\": \"$VERSION\"" "$prefix/node_modules/azurite/package.json" 2>/dev/null; then
    exit 0
fi
if ! command -v npm > /dev/null; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm > /dev/null
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$VERSION" > /dev/null
