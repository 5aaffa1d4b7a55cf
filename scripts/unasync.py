"""Generate the sync face of sessionware from its one async source.

    python scripts/unasync.py           write sessionware/_sync/
    python scripts/unasync.py --check   fail if sessionware/_sync/ is stale

Each module in TWINS is written once, async; its twin is made by the token
replacements in SUBSTITUTIONS (as httpcore's and pymongo's generators do),
then ruff removes the imports the sync face no longer uses and re-sorts the
rest. What truly differs between the faces is not generated: it lives in
``sessionware/_primitives.py`` (async) and ``sessionware/_sync/_primitives.py``
(sync), which define the same names.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# module of the one source -> module of its generated twin
TWINS = {
    "sessionware.core": "sessionware._sync.core",
    "sessionware.users": "sessionware._sync.users",
    "sessionware.admin": "sessionware._sync.admin",
    "sessionware.queue": "sessionware._sync.queue",
    "sessionware.leases": "sessionware._sync.leases",
    "sessionware.waiters": "sessionware._sync.waiters",
    "sessionware.stores.base": "sessionware._sync.stores.base",
    "sessionware.stores._listener": "sessionware._sync.stores._listener",
    "sessionware.stores.memory": "sessionware._sync.stores.memory",
    "sessionware.stores.sqlite": "sessionware._sync.stores.sqlite",
    "sessionware.stores.redis": "sessionware._sync.stores.redis",
    "sessionware.stores.postgres": "sessionware._sync.stores.postgres",
    "sessionware.stores.azure": "sessionware._sync.stores.azure",
    "sessionware.stores.mongodb": "sessionware._sync.stores.mongodb",
    "sessionware.stores.dynamodb": "sessionware._sync.stores.dynamodb",
    "sessionware.stores._purging": "sessionware._sync.stores._purging",
}
# modules imported by the one source whose sync counterpart is hand-written
COUNTERPARTS = {
    "sessionware._primitives": "sessionware._sync._primitives",
    "sessionware.stores._resp": "sessionware._sync.stores._resp",
    "sessionware.stores._pg_lean": "sessionware._sync.stores._pg_lean",
    "sessionware.stores._azure_clients": "sessionware._sync.stores._azure_clients",
    "sessionware.stores._dynamodb_client": "sessionware._sync.stores._dynamodb_client",
}

# classes of the one source whose twins carry another name (public ones: both
# faces are importable side by side)
RENAMED = ["SessionCore", "SessionTransaction", "SessionAdmin", "Store", "MemoryStore",
           "SQLiteStore", "RedisStore", "PostgresStore", "AzureTableStore", "MongoDBStore",
           "DynamoDBStore"]

SUBSTITUTIONS: list[tuple[str, str]] = [
    *((rf"\b{re.escape(a)}\b", b) for a, b in {**TWINS, **COUNTERPARTS}.items()),
    *((rf"\b{name}\b", f"Sync{name}") for name in RENAMED),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncIterable\b", "Iterable"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\bAbstractAsyncContextManager\b", "AbstractContextManager"),
    (r"\bAwaitable\[([^\[\]]*)\]", r"\1"),
    (r"\bCoroutine\[Any, Any, ([^\[\]]*)\]", r"\1"),
    (r"\bredis\.asyncio\b", "redis"),
    (r"\bAsyncScript\b", "Script"),
    (r"\bAsyncConnectionPool\b", "ConnectionPool"),  # psycopg_pool
    (r"\bAsyncConnection\b", "Connection"),  # psycopg
    (r"\bpymongo\.asynchronous\b", "pymongo.synchronous"),
    (r"\bAsync(MongoClient|Collection|Database|ChangeStream)\b", r"\1"),  # pymongo
    (r"\ban async context manager\b", "a context manager"),
]

HEADER = ("# Generated from {source} by scripts/unasync.py: do not edit.\n"
          "# Change the async source and run `python scripts/unasync.py`.\n")


def path_of(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def unasync(text: str) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    return text


def tidy(code: str, target: Path) -> str:
    """Drop the imports the sync face left unused, sort the rest, and lay the
    lines out again where a removed ``await`` or ``async`` moved them (ruff,
    with the project's config, as if the code were at ``target``)."""
    fixed = _ruff(["check", "--fix-only", "--exit-zero", "--select", "F401,I"], code, target)
    return _ruff(["format"], fixed, target)


def _ruff(command: list[str], code: str, target: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--quiet", "--stdin-filename", str(target), "-"],
        input=code, capture_output=True, text=True, check=True, cwd=ROOT).stdout


def generated() -> dict[Path, str]:
    """Every twin's path and the text it must have."""
    files = {}
    for source, twin in TWINS.items():
        source_path, twin_path = path_of(source), path_of(twin)
        header = HEADER.format(source=source_path.relative_to(ROOT).as_posix())
        files[twin_path] = tidy(header + unasync(source_path.read_text()), twin_path)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a twin is stale")
    check = parser.parse_args().check
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if check:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                str(path.relative_to(ROOT)), "generated"))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"stale sync twins: {names}; run `python scripts/unasync.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
