"""The built wheel, as PyPI would serve it: its metadata is complete and valid,
and it installs into a fresh virtualenv and works there with no optional extra
(no redis, psycopg, flask or orjson): the package imports, a session goes
through the ASGI middleware on MemoryStore and SQLiteStore, and a store whose
driver is missing says which extra to install. The install commands of
README's "Install" section, read from it, install that same wheel's files:
today's from the clone, PyPI's with the wheel where PyPI would be."""

from __future__ import annotations

import email
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest
import trove_classifiers

import sessionware

ROOT = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import asyncio, importlib.util, secrets, sys, tempfile

    for driver in ("redis", "psycopg", "psycopg_pool", "flask", "orjson", "azure", "pymongo",
                   "aiobotocore", "botocore", "ravendb"):
        assert importlib.util.find_spec(driver) is None, f"{driver} is installed"

    import sessionware, sessionware.stores
    from sessionware import SessionMiddleware, store_from_url
    from sessionware.stores import MemoryStore, SQLiteStore

    EXTRAS = {"RedisStore": "redis", "PostgresStore": "postgres", "AzureTableStore": "azure",
              "DynamoDBStore": "dynamodb", "MongoDBStore": "mongodb", "RavenDBStore": "ravendb"}
    EXTRAS.update({f"Sync{name}": extra for name, extra in EXTRAS.items()})
    for module in (sessionware, sessionware.stores):
        for name in module.__all__:
            if name not in EXTRAS:
                getattr(module, name)

    for name, extra in EXTRAS.items():
        try:
            getattr(sessionware.stores, name)
        except ImportError as exc:
            assert f"pip install sessionware[{extra}]" in str(exc), exc
        else:
            raise AssertionError(f"{name} imported without its driver")
    try:
        import sessionware.flask
    except ImportError as exc:
        assert "pip install sessionware[flask]" in str(exc), exc
    else:
        raise AssertionError("sessionware.flask imported without Flask")


    async def app(scope, receive, send):
        scope["session"]["n"] = scope["session"].get("n", 0) + 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(scope["session"]["n"]).encode()})


    async def two_requests(store) -> list[bytes]:
        middleware = SessionMiddleware(app, store=store, secret_key=secrets.token_urlsafe(32))
        cookie, bodies = None, []
        for _ in range(2):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                sent.append(message)

            headers = [(b"cookie", cookie.split(";")[0].encode())] if cookie else []
            await middleware({"type": "http", "method": "POST", "path": "/", "headers": headers,
                              "scheme": "http", "query_string": b""}, receive, send)
            for name, value in sent[0]["headers"]:
                if name == b"set-cookie":
                    cookie = value.decode()
            bodies.append(sent[1]["body"])
        await store.aclose()
        return bodies


    assert asyncio.run(two_requests(MemoryStore())) == [b"1", b"2"]
    with tempfile.TemporaryDirectory() as directory:
        assert asyncio.run(two_requests(SQLiteStore(f"{directory}/s.db"))) == [b"1", b"2"]
        assert type(store_from_url(f"sqlite:///{directory}/u.db")) is SQLiteStore
    print("ok", sessionware.__version__)
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("sessionware-*.whl")
    return built


def test_metadata_is_right_for_pypi(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"sessionware-{sessionware.__version__}.dist-info"
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
    assert wheel.name == f"sessionware-{sessionware.__version__}-py3-none-any.whl"
    assert metadata["Version"] == sessionware.__version__
    assert metadata["License-Expression"] == "MIT"
    assert f"{info}/licenses/LICENSE" in names
    assert "sessionware/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "examples/", "benchmarks/"))]
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier")
    assert classifiers, "no classifiers"
    assert set(classifiers) <= trove_classifiers.classifiers, "unknown classifiers"
    assert "License :: OSI Approved :: MIT License" not in classifiers  # PEP 639: the expression
    assert metadata["Description-Content-Type"] == "text/markdown"
    requires = {r.split(";")[0] for r in metadata.get_all("Requires-Dist")
                if "extra ==" not in r}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requires == set(project["dependencies"])
    # the version in CHANGELOG.md's history: released, or the next release
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"[{sessionware.__version__}]" in changelog or (
        f"published as {sessionware.__version__}" in changelog)


@pytest.fixture(scope="module")
def python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its dependencies, nothing more."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--quiet", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr
    return python


def run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)


def test_installs_and_works_without_any_extra(python: Path, tmp_path: Path) -> None:
    done = run(python, CHECK, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok {sessionware.__version__}"


@pytest.mark.parametrize("name", ["PostgresStore", "SyncPostgresStore"])
def test_postgres_store_without_psycopg_names_the_extra(python: Path, tmp_path: Path,
                                                        name: str) -> None:
    code = textwrap.dedent(f"""
        import sessionware.stores
        try:
            sessionware.stores.{name}
        except ImportError as exc:
            print(exc)
    """)
    done = run(python, code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pip install sessionware[postgres]" in done.stdout, done.stdout


def test_the_command_without_click_names_the_extra(python: Path, tmp_path: Path) -> None:
    for command in ([str(python.parent / "sessionware"), "stats"],
                    [str(python), "-m", "sessionware", "stats"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              check=False)
        assert done.returncode == 1
        assert done.stderr.strip() == (
            "sessionware: the command needs click: pip install 'sessionware[cli]'")


def readme_installs() -> list[str]:
    """The ``pip install`` commands of README's "Install" section, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("pip install "):
                commands.append(command)
    return commands


def test_readme_installs_from_the_clone_and_from_pypi() -> None:
    """Today's command (0.1.0 is not on PyPI yet) and the one for after the release."""
    packages = [shlex.split(command)[2] for command in readme_installs()]
    assert packages == [".", "sessionware"], readme_installs()


@pytest.mark.parametrize("command", readme_installs())
def test_readme_install_command_installs_the_wheel(command: str, wheel: Path,
                                                    tmp_path: Path) -> None:
    """Run as written, in the clone (``.`` is the repository), into a fresh
    virtualenv; PyPI's ``sessionware`` is found in the wheel's directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                   check=True, timeout=60)
    python = tmp_path / "venv" / "bin" / "python"
    pip, install, *arguments = shlex.split(command)
    assert (pip, install) == ("pip", "install")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--quiet", "--disable-pip-version-check", *arguments,
                           "--find-links", str(wheel.parent)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    listed = run(python, textwrap.dedent("""
        import importlib.metadata
        import sessionware
        for file in importlib.metadata.files("sessionware"):
            print(file)
        print("version", sessionware.__version__)
    """), tmp_path)
    assert listed.returncode == 0, listed.stderr
    installed = {line for line in listed.stdout.splitlines()
                 if line.startswith("sessionware/") and not line.endswith(".pyc")}
    with zipfile.ZipFile(wheel) as archive:
        built = {name for name in archive.namelist() if name.startswith("sessionware/")}
    assert installed == built
    assert f"version {sessionware.__version__}" in listed.stdout
