"""The ``sessionware`` command, run as a subprocess against real stores: a
SQLite file, the test Redis, PostgreSQL and RavenDB servers, and the Azurite,
mongoeco and DynamoDB Local emulators, each by the URL an operator would give. Sessions are
made by the real middleware (the counter app in process, on the same store
URL); the command sees them from another process, as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionware.cookies import CookieSigner, store_key
from sessionware.stores import SyncSQLiteStore
from sessionware.urls import store_from_url
from tests.support.apps.counter import SECRET
from tests.support.apps.served import Served, serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.processes import free_port
from tests.support.servers.redis import RedisServer

STORES = ["sqlite", "redis", "postgres", "azure", "mongodb", "dynamodb", "ravendb"]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> str:
    """A store URL of the test's own (a fresh file, key prefix, table or
    collection), on the test's own server or emulator."""
    tag = secrets.token_hex(4)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_url')}?prefix=cli{tag}:"
    if request.param == "azure":
        connection = request.getfixturevalue("azure_connection_string")
        return f"azure://{connection}?table=cli{tag}&container=cli{tag}"
    if request.param == "mongodb":
        url = request.getfixturevalue("mongodb_url")
        return f"{url}{'&' if '?' in url else '?'}database=cli_{tag}"
    if request.param == "dynamodb":
        # DynamoDB Local takes any credentials; the command reads them as
        # any AWS tool does, from the environment (run() passes it on)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cli")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cli")
        endpoint = request.getfixturevalue("dynamodb_endpoint")
        return f"dynamodb://cli_{tag}?region=us-east-1&endpoint_url={endpoint}"
    if request.param == "ravendb":
        # the command's client keeps its version: a 4.1 server wraps its errors as
        # ClientVersionMismatchException, whose message still carries the store's
        target = request.getfixturevalue("ravendb")
        host = target.url.removeprefix("http://")
        return f"ravendb://{host}/{target.swept}?collection=Cli{tag}"
    dsn = request.getfixturevalue("postgres_dsn")
    return f"{dsn}?table=cli_{tag}"


def run(*args: str, url: str | None = None, env: dict[str, str] | None = None,
        command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("SESSIONWARE_STORE_URL", "SESSIONWARE_SECRET")}
    if url is not None:
        environ["SESSIONWARE_STORE_URL"] = url
    environ.update(env or {})
    return subprocess.run([*(command or [sys.executable, "-m", "sessionware"]), *args],
                          capture_output=True, text=True, env=environ, timeout=60)


async def arun(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, **kwargs)


def output(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
async def app(store_url: str) -> AsyncIterator[Served]:
    async with serving(store_from_url(store_url), "async") as served:
        yield served


async def log_in(client: httpx.AsyncClient, user: str) -> str:
    client.cookies.clear()
    cookie = session_cookie(await client.get(f"/bind?user={user}"))
    assert cookie
    client.cookies.clear()
    await client.get("/inc", headers=cookie_header(cookie))
    client.cookies.clear()
    return cookie


def key_of(cookie: str) -> str:
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    return store_key(session_id)


async def test_a_user_inspected_and_logged_out_everywhere(app: Served, store_url: str) -> None:
    async with app.client() as client:
        alice = [await log_in(client, "alice") for _ in range(2)]
        bob = await log_in(client, "bob")

        stats = output(await arun("--json", "stats", url=store_url))
        assert (stats["sessions"], stats["locked"], stats["user_indexes"]) == (3, 0, 2)
        assert stats["sizes"]["min"] > 0

        listed = output(await arun("--json", "sessions", "alice", url=store_url))
        assert sorted(s["store_key"] for s in listed) == sorted(key_of(c) for c in alice)

        # a cookie value may begin with "-": "--" ends the options before it
        shown = output(await arun("--json", "--secret", SECRET, "show", "--", alice[0],
                                  url=store_url))
        assert shown["user"] == "alice" and shown["data"]["n"] == 1
        by_key = output(await arun("--json", "show", key_of(alice[0]), url=store_url))
        assert by_key["store_key"] == key_of(alice[0])

        revoked = output(await arun("--json", "revoke-user", "alice", url=store_url))
        assert sorted(revoked["revoked"]) == sorted(key_of(c) for c in alice)
        for cookie in alice:
            assert (await client.get("/n", headers=cookie_header(cookie))).text == "0"
        assert (await client.get("/n", headers=cookie_header(bob))).text == "1"

        gone = await arun("show", key_of(alice[0]), url=store_url)
        assert gone.returncode == 1
        assert gone.stderr.strip() == "Error: no live session with that key"


async def test_revoke_user_while_a_request_holds_the_session(app: Served,
                                                             store_url: str) -> None:
    async with app.client() as client:
        cookie = await log_in(client, "carol")
        holder = asyncio.create_task(client.get("/hold", headers=cookie_header(cookie)))
        await app.holding()
        stats = output(await arun("--json", "stats", url=store_url))
        assert stats["locked"] == 1 and 0 <= stats["oldest_lock"] < 30
        assert stats["lapsed"] == 0 and stats["oldest_lapsed"] is None
        human = await arun("revoke-user", "carol", url=store_url)
        assert human.returncode == 0, human.stderr
        assert human.stdout.splitlines() == ["revoked 1 session of carol",
                                             f"  {key_of(cookie)}"]
        app.release()
        assert (await asyncio.wait_for(holder, 10)).status_code == 409
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "0"
        assert output(await arun("--json", "stats", url=store_url))["sessions"] == 0


async def test_revoke_one_session_and_purge(app: Served, store_url: str) -> None:
    async with app.client() as client:
        cookie = await log_in(client, "dave")
    needs_secret = await arun("revoke", "--", cookie, url=store_url)
    assert needs_secret.returncode == 2
    assert "--secret or SESSIONWARE_SECRET" in needs_secret.stderr
    assert len(needs_secret.stderr.strip().splitlines()) == 1
    done = await arun("revoke", "--", cookie, url=store_url,
                      env={"SESSIONWARE_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"revoked {key_of(cookie)}"
    again = await arun("revoke", key_of(cookie), url=store_url)
    assert again.returncode == 1
    purged = output(await arun("--json", "purge", url=store_url))
    assert isinstance(purged["purged"], int)
    assert (await arun("purge", url=store_url)).stdout.startswith("purged ")


async def test_human_stats_and_show(app: Served, store_url: str) -> None:
    async with app.client() as client:
        cookie = await log_in(client, "erin")
    stats = await arun("stats", url=store_url)
    assert stats.returncode == 0, stats.stderr
    lines = stats.stdout.splitlines()
    assert lines[0].split() == ["live", "sessions", "1"]
    assert lines[-1].startswith("sizes (bytes)  min ")
    assert stats.stderr == ""  # no progress bar without a terminal
    shown = await arun("--store", store_url, "show", key_of(cookie))
    assert shown.returncode == 0, shown.stderr
    assert "user         erin" in shown.stdout.splitlines()


def test_a_bad_url_is_one_line_and_exit_2() -> None:
    result = run("--store", "nosuch://x", "stats")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown scheme" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:{port}/0",
    "postgresql://postgres@127.0.0.1:{port}/postgres?timeout=1",
])
def test_an_unreachable_store_is_one_line_and_exit_1(url: str) -> None:
    result = run("stats", url=url.format(port=free_port()))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "127.0.0.1" in result.stderr


def test_a_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    result = run("stats", url=f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("does not exist)")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_mistyped_sqlite_path_fails_and_makes_no_file(tmp_path: Path) -> None:
    result = run("stats", url=f"sqlite:///{tmp_path / 'sesions.db'}")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "sesions.db" in result.stderr and "no such file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_table_fails_and_makes_no_table(postgres_dsn: str) -> None:
    result = run("stats", url=f"{postgres_dsn}?table=sesions")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "sesions" in result.stderr and "does not exist" in result.stderr
    import psycopg

    with psycopg.connect(postgres_dsn) as db:
        assert db.execute("select to_regclass('sesions')").fetchone() == (None,)


def test_no_store_given_says_how() -> None:
    result = run("stats")
    assert result.returncode == 2
    assert "no store: pass --store URL or set SESSIONWARE_STORE_URL" in result.stderr


def test_a_command_s_help_needs_no_store() -> None:
    result = run("stats", "--help")
    assert result.returncode == 0 and "Usage: sessionware stats" in result.stdout


def test_the_console_script(tmp_path: Path) -> None:
    script = shutil.which("sessionware", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is not installed (pip install -e .)"
    with SyncSQLiteStore(tmp_path / "s.db"):  # made by the app, as a command finds it
        pass
    result = run("--json", "stats", url=f"sqlite:///{tmp_path / 's.db'}", command=[script])
    assert output(result)["sessions"] == 0


# -- the transcript of docs/operations.md ----------------------------------------------

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
_TRANSCRIPT = re.compile(r"^```text\n(\$ .*?)^```", re.MULTILINE | re.DOTALL)
_KEY = re.compile(r"\b[0-9a-f]{64}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def transcript_steps() -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of the page's transcripts, with the lines it prints."""
    steps: list[tuple[str, list[str]]] = []
    for block in _TRANSCRIPT.findall(OPERATIONS.read_text()):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
    return steps


def normalized(lines: list[str], keys: dict[str, str]) -> list[str]:
    def key(match: re.Match[str]) -> str:
        return keys.setdefault(match[0], f"<key {len(keys) + 1}>")

    return [_TIME.sub("<time>", _KEY.sub(key, line)).rstrip() for line in lines]


async def test_the_operations_page_shows_what_the_commands_print(tmp_path: Path) -> None:
    """docs/operations.md's transcript, run: alice signed in on two browsers
    and bob on one, by the real app on a SQLite file; every command of the
    page then prints what the page shows (keys and times aside)."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    async with serving(store_from_url(url), "async") as app, app.client() as client:
        laptop = await log_in(client, "alice")
        await log_in(client, "alice")  # her phone
        await log_in(client, "bob")
        env = {"SESSIONWARE_SECRET": SECRET}
        doc_keys: dict[str, str] = {}
        real_keys: dict[str, str] = {}
        for command, shown in transcript_steps():
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                if "$" not in value:  # the app's secret is the test app's: set above
                    env[name] = value
                continue
            words = shlex.split(command.replace("$SESSION_COOKIE", laptop))
            assert words[0] == "sessionware", command
            # a key the page names stands for the key the run printed in its place
            by_doc = {doc: real for real, placeholder in real_keys.items()
                      for doc, other in doc_keys.items() if other == placeholder}
            words = [by_doc.get(w, w) for w in words]
            environ = {**env, "SESSIONWARE_STORE_URL": env["SESSIONWARE_STORE_URL"].replace(
                "sqlite:///sessions.db", url)}
            result = await arun(*words[1:], env=environ)
            fails = bool(shown) and shown[0].startswith("Error: ")
            assert (result.returncode != 0) == fails, (command, result.stderr)
            printed = (result.stderr if fails else result.stdout).splitlines()
            assert normalized(printed, real_keys) == normalized(shown, doc_keys), command


def test_a_stalled_store_is_one_line_and_exit_1_within_its_timeout(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A Redis that accepts connections and never answers (SIGSTOP): the
    command gives up after the store's socket_timeout, with one line."""
    server = redis_server_factory()
    url = f"{server.url}?socket_timeout=1"
    assert output(run("--json", "stats", url=url))["sessions"] == 0
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run("stats", url=url)
        elapsed = time.monotonic() - started
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert elapsed < 15
