"""Patch a copy of RavenDB 4.1.0's Raven.Server.dll (build 41001) to run on .NET 8.

On .NET 8 the server's first database creation fails with a TypeInitializationException
in ``PoolOfThreads.PooledThread..cctor``: the static constructor reflects on private
fields of .NET Core 2.1's ``Thread``, which .NET 8 no longer has, and
``PooledThread.ResetCurrentThreadName`` uses what it found. Both become no-ops here:
the first IL byte of each body becomes ``ret`` (0x2A). Both methods return void and
take no stack, so ``ret`` is a valid body; .NET 8 lets a thread be renamed anyway.
The assembly is IL-only and .NET Core checks no strong-name signature.

The bodies are located through the metadata (dnfile): the MethodDef rows of the
nested type ``PoolOfThreads/PooledThread``, their RVAs mapped to file offsets, the
method header (tiny or fat) read to find the first IL byte. No offset is hard-coded.
An original that is not the expected one (by SHA-256) is refused. Idempotent: a
patched file is left as it is.

Usage: python ravendb_patch.py ORIGINAL.dll PATCHED.dll
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import dnfile  # type: ignore[import-untyped]

# Raven.Server.dll of the PyPI sdist pyravendb-embedded 4.1.1.4 (RavenDB 4.1.0, build 41001)
ORIGINAL_SHA256 = "e231f0c969dbba9a24394e9769a5744d1cd99101b1ebca53019a110c5750518e"
ENCLOSING, TYPE = "PoolOfThreads", "PooledThread"
METHODS = (".cctor", "ResetCurrentThreadName")
RET = 0x2A
TINY, FAT = 0x2, 0x3  # the low two bits of a method header's first byte


def method_offsets(path: Path) -> dict[str, int]:
    """The file offset of the first IL byte of each of :data:`METHODS`."""
    pe = dnfile.dnPE(str(path))
    try:
        tables = pe.net.mdtables
        enclosed = {row.NestedClass.row_index: row.EnclosingClass.row_index
                    for row in tables.NestedClass or ()}
        found: dict[str, int] = {}
        for index, typedef in enumerate(tables.TypeDef, start=1):
            outer = enclosed.get(index)
            if (str(typedef.TypeName) != TYPE or outer is None
                    or str(tables.TypeDef[outer - 1].TypeName) != ENCLOSING):
                continue
            for method in typedef.MethodList:
                name = str(method.row.Name)
                if name in METHODS:
                    found[name] = _first_il_byte(pe, method.row.Rva)
        missing = set(METHODS) - set(found)
        if missing:
            raise SystemExit(f"{path}: {ENCLOSING}/{TYPE} has no {sorted(missing)}: not the "
                             "RavenDB 4.1.0 server this patch is for")
        return found
    finally:
        pe.close()


def _first_il_byte(pe: dnfile.dnPE, rva: int) -> int:
    offset = pe.get_offset_from_rva(rva)
    header = pe.__data__[offset]
    if header & 0x3 == TINY:
        return int(offset + 1)
    if header & 0x3 == FAT:
        return int(offset + 4 * (pe.__data__[offset + 1] >> 4))  # size in 4-byte words
    raise SystemExit(f"method header at {offset:#x}: neither tiny nor fat")


def patch(original: Path, patched: Path) -> None:
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    if digest != ORIGINAL_SHA256:
        raise SystemExit(f"{original}: SHA-256 {digest}, not the expected {ORIGINAL_SHA256}")
    data = bytearray(original.read_bytes())
    for at in method_offsets(original).values():
        data[at] = RET
    if patched.exists() and patched.read_bytes() == data:
        return  # done before
    scratch = patched.with_suffix(".tmp")
    scratch.write_bytes(bytes(data))
    shutil.move(scratch, patched)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.rsplit("Usage: ", 1)[1] if __doc__ else "usage")
    patch(Path(sys.argv[1]), Path(sys.argv[2]))
