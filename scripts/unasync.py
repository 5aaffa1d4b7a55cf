"""Generate the sync face of sessionware from its one async source.

    python scripts/unasync.py           write sessionware/_sync/
    python scripts/unasync.py --check   fail if sessionware/_sync/ is stale

By rule, as httpcore's and pymongo's generators do: every module under
``sessionware/_async/`` is written once, async, and its twin is the module at
the same place under ``sessionware/_sync/``, made by the token replacements in
SUBSTITUTIONS; then ruff removes the imports the sync face no longer uses and
re-sorts the rest. The one exception is ``io/``: what truly differs between
the faces (primitives, driver connections) is written by hand on both sides,
``sessionware/_async/io/`` and ``sessionware/_sync/io/``, with the same names.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "sessionware" / "_async"
TWIN = ROOT / "sessionware" / "_sync"
HANDWRITTEN = SOURCE / "io"



def registered_stores() -> list[str]:
    """The store classes named in the registry (``STORES`` in
    sessionware/stores/__init__.py), read without importing the package."""
    tree = ast.parse((ROOT / "sessionware" / "stores" / "__init__.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "STORES"
                and isinstance(node.value, ast.Dict)):
            return [ast.literal_eval(key) for key in node.value.keys if key is not None]
    raise LookupError("no STORES registry in sessionware/stores/__init__.py")


# classes of the one source whose twins carry another name, "Sync" before it
# (public ones: both faces are importable side by side): the core's, and every
# registered store's
RENAMED = ["SessionCore", "SessionTransaction", "SessionAdmin", *registered_stores()]

SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"\bsessionware\._async\b", "sessionware._sync"),
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
    for source in sorted(SOURCE.rglob("*.py")):
        if source.is_relative_to(HANDWRITTEN):
            continue
        twin = TWIN / source.relative_to(SOURCE)
        header = HEADER.format(source=source.relative_to(ROOT).as_posix())
        files[twin] = tidy(header + unasync(source.read_text()), twin)
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
