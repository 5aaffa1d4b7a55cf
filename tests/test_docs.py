"""Every code block of the docs (docs/**/*.md and README.md) runs.

``python`` blocks are executed, in order, in one namespace per page (a page
reads as one script: a later block may use what an earlier one defined), in a
temporary working directory (``sessions.db`` lands there) with
``SESSION_SECRET`` set. A block preceded by the line ``<!-- test: compile -->``
is compiled only (top-level ``await`` allowed): for fragments that need a
server, a request or names the page leaves to the reader; a test counts them
so they stay the exception. ``sh`` blocks are not run (they install packages
and start servers); the commands they give are checked instead: each
``pip install 'sessionware[extra]'`` names extras that exist, and each script or
example they run exists. Other languages (``text``, ``toml``, ...) are prose.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import secrets
import shlex
import subprocess
import sys
import textwrap
import tomllib
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"])
MODES = ("run", "compile")
LANGUAGES = {"python", "sh", "text", "toml", "ini", "json", "sql", "js"}  # js: mongosh, shown only

_FENCE = re.compile(
    r"^(?:<!-- test: (?P<mode>\w+) -->\n)?```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    mode: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code"))  # 0-based index of the fence line
        found.append(Block(page, line + 1, match["lang"], match["mode"] or "run",
                           match["code"]))
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_fence_is_understood(page: Path) -> None:
    """A fence the pattern misses (indented, unclosed) would escape the tests."""
    fences = sum(1 for line in page.read_text().splitlines() if line.lstrip().startswith("```"))
    found = blocks(page)
    assert fences == 2 * len(found), f"{page_id(page)}: a fence not at the start of a line?"
    for block in found:
        assert block.lang in LANGUAGES, f"{block.where}: say the block's language"
        assert block.mode in MODES, f"{block.where}: unknown test mode {block.mode!r}"


# Django's settings are configured once per process: a page that configures
# them runs in a process of its own, as the script of its __main__ module (so
# ROOT_URLCONF=__name__ finds the page's urlpatterns).
OWN_PROCESS = "settings.configure("


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang == "python" for b in blocks(p))],
                         ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSION_SECRET", secrets.token_urlsafe(32))
    if OWN_PROCESS in page.read_text():
        script = ("import sys; from pathlib import Path; from tests.test_docs import run_blocks; "
                  f"run_blocks(Path({str(page)!r}), vars(sys.modules['__main__']))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return
    # a module of its own, in sys.modules: Litestar resolves a handler's
    # annotations through the module its function was defined in
    page_module = types.ModuleType(f"docs_{page.stem}")
    monkeypatch.setitem(sys.modules, page_module.__name__, page_module)
    run_blocks(page, page_module.__dict__)


def run_blocks(page: Path, namespace: dict[str, object]) -> None:
    """Run the page's python blocks in order in ``namespace``."""
    for block in blocks(page):
        if block.lang != "python":
            continue
        # Line numbers in tracebacks point into the page.
        source = "\n" * block.line + block.code
        if block.mode == "compile":
            compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            continue
        exec(compile(source, str(block.page), "exec"), namespace)


def test_compile_only_blocks_stay_few() -> None:
    every = [b for p in PAGES for b in blocks(p) if b.lang == "python"]
    compiled = [b.where for b in every if b.mode == "compile"]
    assert len(compiled) <= len(every) // 3, compiled


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang == "sh" for b in blocks(p))],
                         ids=page_id)
def test_shell_commands_name_what_exists(page: Path) -> None:
    extras = _extras()
    for block in blocks(page):
        if block.lang != "sh":
            continue
        for line in block.code.splitlines():
            command = line.split("#", 1)[0].strip()
            if not command:
                continue
            words = shlex.split(command)
            for word in words:
                named = re.fullmatch(r"sessionware\[([\w,]+)\]", word)
                if named:
                    unknown = set(named[1].split(",")) - extras
                    assert not unknown, f"{block.where}: no extra {unknown} in pyproject.toml"
            if words[0] in ("bash", "python") and len(words) > 1 and "/" in words[1]:
                assert (ROOT / words[1]).exists(), f"{block.where}: no {words[1]}"


def test_readme_quotes_the_published_benchmarks() -> None:
    """Every ratio and latency the README claims is one docs/benchmarks.md
    publishes (a re-run that changes them must change the README too)."""
    published = (ROOT / "docs" / "benchmarks.md").read_text()
    performance = (ROOT / "README.md").read_text().split("## Performance", 1)[1]
    performance = performance.split("\n## ", 1)[0]
    claims = re.findall(r"\d+\.\d+x|\d+\.\d+ ms", performance)
    assert claims, "no numbers found in README's Performance section"
    published_numbers = set(re.findall(r"\d+\.\d+x|\d+\.\d+ ms", published))
    for claim in claims:
        # "between 0.124 and 0.604 ms": the first number of a range has no unit
        assert claim in published_numbers, f"README claims {claim}: not in docs/benchmarks.md"
    for number in re.findall(r"between (\d+\.\d+) and", performance):
        assert f"{number} ms" in published_numbers, number


REFERENCE = [ROOT / "docs" / "reference.md", *sorted((ROOT / "docs" / "reference").glob("*.md"))]
# The modules whose __all__ is the public surface: the package, its stores, the drivers.
PUBLIC = ("sessionware", "sessionware.stores", "sessionware.fastapi", "sessionware.wsgi",
          "sessionware.flask", "sessionware.django")
# "::: path", then its indented options (YAML)
_DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n)*)",
                        re.MULTILINE)


def _documented(package: Any) -> Counter[str]:
    """The definitions (griffe's canonical paths) the reference's directives
    render: an object's directive renders it; a module's renders its
    ``members`` (all of ``__all__`` when not listed, none when ``false``)."""

    def target(path: str) -> Any:
        found = package if path == package.path else package[path.removeprefix("sessionware.")]
        return found.final_target if found.is_alias else found

    documented: Counter[str] = Counter()
    for page in REFERENCE:
        for match in _DIRECTIVE.finditer(page.read_text()):
            obj = target(match["path"])
            if not obj.is_module:
                documented[obj.path] += 1
                continue
            options = (yaml.safe_load(textwrap.dedent(match["options"])) or {}).get("options", {})
            members = options.get("members")
            names = obj.exports if members is None else members or []
            documented.update(target(f"{obj.path}.{name}").path for name in names)
    return documented


def test_every_public_name_is_in_the_reference_once() -> None:
    """docs/reference.md and docs/reference/*.md: each name of the public
    modules' ``__all__`` is rendered by exactly one mkdocstrings directive (a
    name re-exported by several modules, such as ``store_from_url``, once),
    and nothing is rendered twice."""
    import griffe

    package = griffe.load("sessionware", search_paths=[str(ROOT)], resolve_aliases=True,
                          resolve_external=False)
    documented = _documented(package)
    public: dict[str, list[str]] = {}
    for module in PUBLIC:
        for name in importlib.import_module(module).__all__:
            found = package[f"{module}.{name}".removeprefix("sessionware.")]
            path = (found.final_target if found.is_alias else found).path
            public.setdefault(path, []).append(f"{module}.{name}")
    missing = sorted(name for path, names in public.items() if not documented[path]
                     for name in names)
    assert not missing, f"not in the API reference: {missing}"
    twice = sorted(path for path, count in documented.items() if count > 1)
    assert not twice, f"documented more than once in the API reference: {twice}"
