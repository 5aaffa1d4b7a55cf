"""A store that cannot serve stops the app from starting, with its reason.

ASGI: at the lifespan's startup (uvicorn exits with the message). WSGI and
Flask: when the middleware is made. Otherwise every request would answer 503.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette

from sessionware import SessionMiddleware, StoreUnavailable
from sessionware.flask import Sessionware
from sessionware.stores import RedisStore, SQLiteStore, Store
from sessionware.wsgi import WSGISessionMiddleware
from tests.support.servers.processes import free_port

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


def test_uvicorn_exits_with_the_reason(tmp_path: Path) -> None:
    module = tmp_path / "broken_app.py"
    module.write_text(
        "from starlette.applications import Starlette\n"
        "from sessionware import SessionMiddleware\n"
        "from sessionware.stores import SQLiteStore\n"
        f"app = SessionMiddleware(Starlette(), store=SQLiteStore({str(tmp_path)!r}),\n"
        f"                        secret_key={SECRET!r})\n")
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "broken_app:app", "--port", str(free_port()),
         "--host", "127.0.0.1", "--lifespan", "on"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert done.returncode != 0
    assert "the path is a directory" in done.stderr


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
