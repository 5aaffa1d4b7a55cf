"""The ``expired`` event: an app's ``on_event`` hook hears of a session the
store removed at its expiry, on a real SQLite store, under ASGI and WSGI;
never of the core's bookkeeping records (a regenerated session's tombstone)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionware import SessionMiddleware
from sessionware.stores import SQLiteStore
from sessionware.telemetry import SessionEvent
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware

SECRET = "k" * 32
DEADLINE = 15.0  # bound on the wait for the event: generous, never hoped for
TICK = 0.05  # seconds between the requests that start the sweeps (sweep_interval too)


def age_every_row(path: Path) -> None:
    """Every row past its idle deadline, in one statement (so one sweep
    batch removes the session and its tombstone together), as if its
    ``idle_timeout`` had passed."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sessionware_sessions SET expires_at = expires_at - 3600")


def cookie_header(client: httpx.Client | httpx.AsyncClient) -> dict[str, str]:
    """The client's session cookie as a header of its own; the jar emptied,
    so each request carries it even once the app expired it."""
    header = {"cookie": "; ".join(f"{name}={value}" for name, value in client.cookies.items())}
    client.cookies.clear()
    return header


def expired_of(seen: list[SessionEvent]) -> list[str]:
    return [event.store_key for event in seen if event.kind == "expired"]


async def test_an_asgi_app_hears_its_session_expire(tmp_path: Path) -> None:
    seen: list[SessionEvent] = []
    expired = asyncio.Event()

    async def hook(event: SessionEvent) -> None:
        seen.append(event)
        if event.kind == "expired":
            expired.set()

    async def inc(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def login(request: Request) -> PlainTextResponse:
        request.session.regenerate()  # leaves a tombstone under the old key
        return PlainTextResponse("in")

    path = tmp_path / "s.db"
    app = SessionMiddleware(Starlette(routes=[Route("/inc", inc), Route("/login", login)]),
                            store=SQLiteStore(path, sweep_interval=TICK),
                            secret_key=SECRET, on_event=hook)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        await client.get("/inc")
        await client.get("/login")
        assert [event.kind for event in seen] == ["created", "regenerated"]
        regenerated = seen[1]
        headers = cookie_header(client)
        age_every_row(path)
        deadline = time.monotonic() + DEADLINE
        while not expired.is_set():
            assert time.monotonic() < deadline, [event.kind for event in seen]
            # traffic: a due sweep starts (the first finds the session gone)
            assert (await client.get("/inc", headers=headers)).status_code == 200
            client.cookies.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(expired.wait(), TICK)
    await app.core.aclose()
    assert expired_of(seen) == [regenerated.store_key]  # not the tombstone of created's
    event = next(event for event in seen if event.kind == "expired")
    assert event == SessionEvent("expired", regenerated.store_key, {})


def test_a_wsgi_app_hears_its_session_expire(tmp_path: Path) -> None:
    seen: list[SessionEvent] = []
    expired = threading.Event()

    def hook(event: SessionEvent) -> None:  # on the store's sweeping thread
        seen.append(event)
        if event.kind == "expired":
            expired.set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[SESSION_KEY]["n"] = environ[SESSION_KEY].get("n", 0) + 1
        start_response("200 OK", [])
        return [b"ok"]

    path = tmp_path / "w.db"
    middleware = WSGISessionMiddleware(app, store=SQLiteStore(path, sweep_interval=TICK),
                                       secret_key=SECRET, on_event=hook)
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://t") as client:
        assert client.get("/").status_code == 200
        (created,) = seen
        headers = cookie_header(client)
        age_every_row(path)
        deadline = time.monotonic() + DEADLINE
        while not expired.wait(TICK):
            assert time.monotonic() < deadline, [event.kind for event in seen]
            assert client.get("/", headers=headers).status_code == 200  # traffic
            client.cookies.clear()
    middleware.close()
    assert expired_of(seen) == [created.store_key]
