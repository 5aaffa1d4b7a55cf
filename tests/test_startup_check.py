"""A store that cannot serve, or a wrong configuration, stops the app from
starting, with its reason.

ASGI: at the lifespan's startup (the server exits with the message, under
uvicorn, hypercorn and granian with their defaults). WSGI and Flask: when the
middleware is made. Otherwise every request would answer 503 (or 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette

from sessionware import ConfigurationError, SessionMiddleware, StoreError, StoreUnavailable
from sessionware.flask import Sessionware
from sessionware.stores import MemoryStore, RedisStore, SQLiteStore, Store
from sessionware.wsgi import WSGISessionMiddleware
from tests.support.processes import free_port

SECRET = "k" * 32
ROOT = Path(__file__).resolve().parent.parent


async def start_up(app: Any) -> dict[str, Any]:
    """Drive the ASGI lifespan's startup as a server does; its answer."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   inbox.get, answers.put))
    answer = await asyncio.wait_for(answers.get(), 10)
    await inbox.put({"type": "lifespan.shutdown"})
    if answer["type"] == "lifespan.startup.complete":
        await asyncio.wait_for(answers.get(), 10)
    await asyncio.wait_for(task, 10)
    return answer


@pytest.mark.parametrize(("make_store", "reason"), [
    pytest.param(lambda tmp: SQLiteStore(tmp), "the path is a directory", id="sqlite-directory"),
    pytest.param(lambda tmp: SQLiteStore(tmp / "no" / "s.db"), "does not exist",
                 id="sqlite-no-directory"),
    pytest.param(lambda tmp: RedisStore(f"redis://127.0.0.1:{free_port()}/0"),
                 "connection refused", id="redis-refused"),
])
async def test_asgi_startup_fails_with_the_reason(tmp_path: Path, make_store: Any,
                                                  reason: str) -> None:
    store: Store = make_store(tmp_path)
    app = SessionMiddleware(Starlette(), store=store, secret_key=SECRET)
    answer = await start_up(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert reason in answer["message"]
    assert "session store cannot serve" in answer["message"]


async def test_asgi_startup_passes_with_a_store_that_serves(tmp_path: Path) -> None:
    app = SessionMiddleware(Starlette(), store=SQLiteStore(tmp_path / "s.db"),
                            secret_key=SECRET)
    assert (await start_up(app))["type"] == "lifespan.startup.complete"


async def test_asgi_startup_without_the_check(tmp_path: Path) -> None:
    app = SessionMiddleware(Starlette(), store=SQLiteStore(tmp_path), secret_key=SECRET,
                            check_store=False)
    assert (await start_up(app))["type"] == "lifespan.startup.complete"


async def test_a_failed_check_shuts_the_started_app_down_before_failing_the_startup(
        tmp_path: Path) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("stopped")

    store = SQLiteStore(tmp_path)
    app = SessionMiddleware(Starlette(lifespan=lifespan), store=store, secret_key=SECRET)
    answer = await start_up(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert events == ["started", "stopped"]  # its own shutdown ran: nothing is left running
    with pytest.raises(StoreError, match="closed"):
        await store.read("k")


async def test_a_configuration_error_fails_the_startup_and_every_request() -> None:
    app = SessionMiddleware(Starlette(), store=MemoryStore(), secret_key="short")
    answer = await start_up(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "a secret key needs at least 32 bytes" in answer["message"]
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "scheme": "http"}
    with pytest.raises(ConfigurationError, match="a secret key needs at least 32 bytes"):
        await app(scope, None, None)  # type: ignore[arg-type]


# Each ASGI server with its default settings (uvicorn's --lifespan auto
# included), serving a FastAPI app that adds the middleware, which Starlette
# makes at the first call: the lifespan's.
SERVERS = {
    "uvicorn": ["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "{port}"],
    "hypercorn": ["-m", "hypercorn", "app:app", "--bind", "127.0.0.1:{port}"],
    "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                "--port", "{port}", "app:app"],
}
FAILURES = {
    "secret-key": ("store=MemoryStore(), secret_key='short'", "a secret key needs at least 32"),
    "store-url": ("secret_key='k' * 32", "set SESSIONWARE_STORE_URL"),
    "store": ("store=SQLiteStore({tmp!r}), secret_key='k' * 32", "the path is a directory"),
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("server", SERVERS)
def test_the_server_does_not_start_and_shows_only_the_reason(
        tmp_path: Path, server: str, failure: str) -> None:
    arguments, reason = FAILURES[failure]
    (tmp_path / "app.py").write_text(
        "from fastapi import FastAPI\n"
        "from sessionware import SessionMiddleware\n"
        "from sessionware.stores import MemoryStore, SQLiteStore\n"
        "app = FastAPI()\n"
        f"app.add_middleware(SessionMiddleware, {arguments.format(tmp=str(tmp_path))})\n")
    environ = {name: value for name, value in os.environ.items()
               if name != "SESSIONWARE_STORE_URL"}
    command = [part.format(port=free_port()) for part in SERVERS[server]]
    done = subprocess.run(  # the server exits by itself, or the timeout fails the test
        [sys.executable, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    output = done.stdout + done.stderr
    assert reason in output
    assert "sessionware: " in output
    for stray in ("appears unsupported", "could not sweep", "CancelledError", "Uvicorn running"):
        assert stray not in output
    if server != "hypercorn":  # hypercorn exits with 0 after a failed startup, its own way
        assert done.returncode != 0


def test_wsgi_middleware_fails_when_made(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="the path is a directory"):
        WSGISessionMiddleware(lambda e, s: [], store=SQLiteStore(tmp_path), secret_key=SECRET)
    WSGISessionMiddleware(lambda e, s: [], store=SQLiteStore(tmp_path), secret_key=SECRET,
                          check_store=False)


def test_flask_app_creation_fails(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    with pytest.raises(StoreUnavailable, match="does not exist"):
        Sessionware(app, store=SQLiteStore(tmp_path / "missing" / "s.db"))
