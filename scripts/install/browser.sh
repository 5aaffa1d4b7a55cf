#!/usr/bin/env bash
# The browser test's tools: Debian's chromium, and the npm package
# playwright-core (a driver only: it never downloads a browser of its own) in
# the project-local, gitignored .tools/browser/. A no-op when both are there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PLAYWRIGHT=1.65.1
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm > /dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi
installed=$(node -p "require('./.tools/browser/node_modules/playwright-core/package.json').version" \
    2> /dev/null || true)
if [ "$installed" != "$PLAYWRIGHT" ]; then
    mkdir -p .tools/browser
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix .tools/browser --no-save \
        --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT" > /dev/null
fi
