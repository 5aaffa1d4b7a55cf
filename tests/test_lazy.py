"""Lock mode ``lazy``: only the routes that declare the session lock it.

Starlette (``load_session``, ``@uses_session``), FastAPI (the dependencies of
``sessionware.fastapi``), plain WSGI and Flask; on a real SQLite store, counted.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import (
    SessionClosed,
    SessionMiddleware,
    SessionNotLoaded,
    load_session,
    uses_session,
)
from sessionware.fastapi import LockedSession, ReadSession
from sessionware.flask import Sessionware
from sessionware.flask import load_session as flask_load_session
from sessionware.flask import uses_session as flask_uses_session
from sessionware.stores import SQLiteStore
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware
from sessionware.wsgi import load_session as wsgi_load_session
from tests.support.helpers import CountingStore, SyncCountingStore, session_cookie
from tests.support.middleware_suite import _websocket_session

SECRET = "k" * 32


def starlette_app(store: CountingStore, gate: dict[str, asyncio.Event]) -> Starlette:
    @uses_session()
    async def inc(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse(request.session["n"])

    @uses_session("read")
    async def peek(request: Request) -> JSONResponse:
        return JSONResponse(request.session.get("n", 0))

    @uses_session()
    def inc_sync(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse(request.session["n"])

    async def hold(request: Request) -> PlainTextResponse:
        session = await load_session(request)
        session["held"] = True
        gate["entered"].set()
        await gate["release"].wait()
        return PlainTextResponse("held")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def touch(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("n")))

    async def read_then_lock(request: Request) -> PlainTextResponse:
        await load_session(request, "read")
        await load_session(request, "exclusive")
        return PlainTextResponse("unreachable")

    return Starlette(routes=[
        Route("/inc", inc, methods=["POST"]), Route("/inc-sync", inc_sync, methods=["POST"]),
        Route("/peek", peek), Route("/hold", hold, methods=["POST"]), Route("/hello", hello),
        Route("/touch", touch), Route("/read-then-lock", read_then_lock),
    ])


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(SQLiteStore(tmp_path / "s.db"))
    yield store
    await store.aclose()


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.fixture
async def lazy(sqlite_store: CountingStore) -> AsyncIterator[
        tuple[httpx.AsyncClient, CountingStore, dict[str, asyncio.Event]]]:
    gate = {"entered": asyncio.Event(), "release": asyncio.Event()}
    app = SessionMiddleware(starlette_app(sqlite_store, gate), store=sqlite_store,
                            secret_key=SECRET, lock_mode="lazy", lock_timeout=2)
    async with client_for(app) as client:
        yield client, sqlite_store, gate


async def test_a_route_that_does_not_declare_the_session_costs_no_store_trip(lazy: Any) -> None:
    client, store, _ = lazy
    assert (await client.post("/inc")).json() == 1  # a session, and its cookie
    before = store.total()
    for _ in range(5):
        response = await client.get("/hello")
        assert response.text == "hello"
        assert "set-cookie" not in response.headers
    assert store.total() == before
    assert (await client.post("/inc")).json() == 2  # the session is still there


async def test_routes_that_do_not_use_the_session_do_not_wait_for_its_lock(lazy: Any) -> None:
    client, _, gate = lazy
    await client.post("/inc")
    holder = asyncio.create_task(client.post("/hold"))
    await gate["entered"].wait()  # the lock is held now, until we release it
    others = await asyncio.gather(*(client.get("/hello") for _ in range(10)))
    assert [r.text for r in others] == ["hello"] * 10
    assert not holder.done()
    gate["release"].set()
    assert (await holder).text == "held"


async def test_declared_routes_lock_so_concurrent_increments_lose_nothing(lazy: Any) -> None:
    client, _, _ = lazy
    await client.post("/inc")
    await asyncio.gather(*(client.post("/inc" if i % 2 else "/inc-sync") for i in range(40)))
    assert (await client.get("/peek")).json() == 41


async def test_a_read_route_changes_nothing_and_takes_no_lock(lazy: Any) -> None:
    client, store, gate = lazy
    await client.post("/inc")
    holder = asyncio.create_task(client.post("/hold"))
    await gate["entered"].wait()
    assert (await client.get("/peek")).json() == 1  # not blocked by the holder
    assert store.calls["read"] >= 1
    gate["release"].set()
    await holder


async def test_touching_the_session_without_loading_it_says_how_to_load_it(lazy: Any) -> None:
    client, _, _ = lazy
    with pytest.raises(SessionNotLoaded, match=r"load_session\(request\)"):
        await client.get("/touch")


async def test_a_snapshot_cannot_be_locked_afterwards(lazy: Any) -> None:
    client, _, _ = lazy
    with pytest.raises(SessionClosed, match="loaded read-only"):
        await client.get("/read-then-lock")


async def test_a_load_that_times_out_is_answered_by_on_error(lazy: Any) -> None:
    client, _, gate = lazy
    await client.post("/inc")
    holder = asyncio.create_task(client.post("/hold"))
    await gate["entered"].wait()
    async with asyncio.timeout(10):
        response = await client.post("/inc")  # waits lock_timeout=2 s, then 503
    assert response.status_code == 503
    assert "retry-after" in response.headers
    gate["release"].set()
    await holder


async def test_load_session_outside_the_middleware_is_a_clear_error() -> None:
    async def endpoint(request: Request) -> PlainTextResponse:
        await load_session(request)
        return PlainTextResponse("unreachable")

    async with client_for(Starlette(routes=[Route("/", endpoint)])) as client:
        with pytest.raises(SessionNotLoaded, match="not installed"):
            await client.get("/")


async def test_in_the_default_mode_load_session_returns_the_loaded_session(
        sqlite_store: CountingStore) -> None:
    gate = {"entered": asyncio.Event(), "release": asyncio.Event()}
    app = SessionMiddleware(starlette_app(sqlite_store, gate), store=sqlite_store,
                            secret_key=SECRET)
    async with client_for(app) as client:
        assert (await client.post("/inc")).json() == 1
        assert (await client.get("/touch")).text == "1"
        assert (await client.post("/inc")).json() == 2


async def test_a_websocket_loads_its_session_when_it_asks(tmp_path: Path) -> None:
    async def inc(request: Request) -> JSONResponse:
        session = await load_session(request)
        session["n"] = session.get("n", 0) + 1
        return JSONResponse(session["n"])

    async def socket(websocket: WebSocket) -> None:
        session = await load_session(websocket, "read")
        await websocket.accept()
        await websocket.send_text(str(session.get("n")))
        await websocket.close()

    store = SQLiteStore(tmp_path / "ws.db")
    app = SessionMiddleware(Starlette(routes=[Route("/inc", inc, methods=["POST"]),
                                              WebSocketRoute("/ws", socket)]),
                            store=store, secret_key=SECRET, lock_mode="lazy")
    async with client_for(app) as client:
        cookie = session_cookie(await client.post("/inc"))
    assert cookie
    sent = await _websocket_session(app, f"session={cookie}".encode())  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "1"
    await store.aclose()


# FastAPI


def fastapi_app(store: CountingStore) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secret_key=SECRET, lock_mode="lazy")

    @app.post("/inc")
    async def inc(session: LockedSession) -> int:
        session["n"] = session.get("n", 0) + 1
        return int(session["n"])

    @app.get("/peek")
    async def peek(session: ReadSession) -> int:
        return int(session.get("n", 0))

    @app.post("/login")
    async def login(session: LockedSession) -> str:
        session.regenerate()
        return "ok"

    @app.get("/both")
    async def both(locked: LockedSession, read: ReadSession) -> bool:
        return locked is read  # loading twice returns the one session

    @app.get("/hello")
    async def hello() -> str:
        return "hello"

    return app


async def test_fastapi_dependencies_lock_only_the_endpoints_that_declare_them(
        sqlite_store: CountingStore) -> None:
    async with client_for(fastapi_app(sqlite_store)) as client:
        await client.post("/inc")
        await asyncio.gather(*(client.post("/inc") for _ in range(30)))
        assert (await client.get("/peek")).json() == 31
        before = sqlite_store.total()
        assert (await client.get("/hello")).json() == "hello"
        assert sqlite_store.total() == before
        assert (await client.get("/both")).json() is True
        old = client.cookies["session"]
        assert (await client.post("/login")).json() == "ok"
        assert client.cookies["session"] != old
        assert (await client.get("/peek")).json() == 31


# WSGI and Flask


@pytest.fixture
def sync_store(tmp_path: Path) -> Iterator[SyncCountingStore]:
    store = SyncCountingStore(SQLiteStore(tmp_path / "w.db").sync())
    yield store
    store.close()


def test_wsgi_app_loads_where_it_asks(sync_store: SyncCountingStore) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/inc":
            session = wsgi_load_session(environ)
            session["n"] = session.get("n", 0) + 1
            body = str(session["n"]).encode()
        elif environ["PATH_INFO"] == "/touch":
            body = str(environ[SESSION_KEY].get("n")).encode()
        else:
            body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    middleware = WSGISessionMiddleware(app, store=sync_store, secret_key=SECRET,
                                       lock_mode="lazy")
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://t") as client:
        assert client.post("/inc").text == "1"
        before = sync_store.total()
        assert client.get("/hello").text == "hello"
        assert sync_store.total() == before
        assert client.post("/inc").text == "2"
        with pytest.raises(SessionNotLoaded):
            client.get("/touch")


def flask_app(store: SyncCountingStore, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    Sessionware(app, store=store, lock_mode="lazy", **options)
    from flask import session

    @app.post("/inc")
    @flask_uses_session()
    def inc() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/peek")
    @flask_uses_session("read")
    def peek() -> str:
        return str(session.get("n", 0))

    @app.get("/hold")
    def hold() -> str:
        flask_load_session(flask_request)["held"] = True
        store_gate["entered"].set()
        store_gate["release"].wait(30)
        return "held"

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/touch")
    def touch() -> str:
        return str(session.get("n"))

    return app


store_gate: dict[str, threading.Event] = {}


def test_flask_views_lock_only_when_decorated(sync_store: SyncCountingStore) -> None:
    app = flask_app(sync_store)
    client = app.test_client()
    assert client.post("/inc").text == "1"
    before = sync_store.total()
    response = client.get("/hello")
    assert response.text == "hello"
    assert "Cookie" not in response.headers.get("Vary", "")
    assert sync_store.total() == before
    assert client.get("/peek").text == "1"
    assert client.get("/touch").status_code == 500  # used without loading: the app's bug


def test_flask_threads_of_one_user_lose_nothing_and_others_do_not_wait(
        sync_store: SyncCountingStore) -> None:
    app = flask_app(sync_store, lock_timeout=1)
    store_gate.update(entered=threading.Event(), release=threading.Event())
    first = app.test_client()
    first.post("/inc")
    cookie = first.get_cookie("session")
    assert cookie is not None

    def client() -> Any:
        c = app.test_client()
        c.set_cookie("session", cookie.value)
        return c

    holder = threading.Thread(target=lambda: client().get("/hold"))
    holder.start()
    assert store_gate["entered"].wait(10)
    assert [client().get("/hello").text for _ in range(10)] == ["hello"] * 10
    blocked = client().post("/inc")  # waits lock_timeout, then the on_error answer
    assert blocked.status_code == 503
    store_gate["release"].set()
    holder.join(10)
    threads = [threading.Thread(target=lambda: client().post("/inc")) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert client().get("/peek").text == "21"
