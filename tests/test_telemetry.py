"""Events and metrics, on a real SQLite store, read back with the
OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionware import SessionAdmin, SessionMiddleware
from sessionware.stores import RedisStore, SQLiteStore
from sessionware.telemetry import SessionEvent
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware
from tests.stores.redis.test_expired import subscribed
from tests.support.servers.redis import RedisServer

SECRET = "k" * 32


def app_with(path: Path, gate: dict[str, asyncio.Event] | None = None, **options: Any) -> Any:
    async def inc(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def login(request: Request) -> PlainTextResponse:
        request.session.regenerate()
        request.session["user"] = "ada"
        return PlainTextResponse("in")

    async def logout(request: Request) -> PlainTextResponse:
        request.session.invalidate()
        return PlainTextResponse("out")

    async def hold(request: Request) -> PlainTextResponse:
        request.session["held"] = True
        assert gate is not None
        gate["entered"].set()
        await gate["release"].wait()
        return PlainTextResponse("held")

    routes = [Route(p, f) for p, f in
              (("/inc", inc), ("/login", login), ("/logout", logout), ("/hold", hold))]
    return SessionMiddleware(Starlette(routes=routes), store=SQLiteStore(path),
                             secret_key=SECRET, **options)


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[SessionEvent]]]:
    seen: list[SessionEvent] = []
    app = app_with(tmp_path / "s.db", on_event=seen.append)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        yield client, seen
    await app.core.aclose()


async def test_events_for_created_regenerated_and_invalidated(events: Any) -> None:
    client, seen = events
    await client.get("/inc")
    await client.get("/inc")  # an update is not an event
    await client.get("/login")
    await client.get("/logout")
    assert [e.kind for e in seen] == ["created", "regenerated", "invalidated"]
    created, regenerated, invalidated = seen
    assert regenerated.previous_key == created.store_key
    assert invalidated.store_key == regenerated.store_key
    assert regenerated.session["user"] == "ada"
    assert len(created.store_key) == 64  # the hashed key, never the id


async def test_a_failing_hook_is_logged_and_the_request_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: SessionEvent) -> None:
        raise RuntimeError("hook bug")

    app = app_with(tmp_path / "s.db", on_event=broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            assert (await client.get("/inc")).text == "1"
            assert (await client.get("/inc")).text == "2"  # the session was saved
    assert "on_event hook failed" in caplog.text
    await app.core.aclose()


async def test_an_async_hook_is_awaited(tmp_path: Path) -> None:
    seen: list[str] = []

    async def hook(event: SessionEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.kind)

    app = app_with(tmp_path / "s.db", on_event=hook)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        await client.get("/inc")
    assert seen == ["created"]
    await app.core.aclose()


def test_wsgi_hooks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[SESSION_KEY]["n"] = 1
        start_response("200 OK", [])
        return [b"ok"]

    async def not_under_wsgi(event: SessionEvent) -> None:  # pragma: no cover - never run
        seen.append("async")

    for hook in (lambda e: seen.append(e.kind), not_under_wsgi):
        middleware = WSGISessionMiddleware(app, store=SQLiteStore(tmp_path / "w.db"),
                                           secret_key=SECRET, on_event=hook)
        with caplog.at_level(logging.ERROR, logger="sessionware"), httpx.Client(
                transport=httpx.WSGITransport(app=middleware), base_url="http://t") as client:
            assert client.get("/").status_code == 200
        middleware.close()
    assert seen == ["created"]
    assert "plain functions" in caplog.text


def expiring_app(server: RedisServer, hook: Callable[[SessionEvent], None]) -> SessionMiddleware:
    """An app on ``server`` whose sessions expire 0.3 s after ``/inc``."""
    async def inc(request: Request) -> PlainTextResponse:
        request.session["n"] = 1
        return PlainTextResponse("1")

    return SessionMiddleware(Starlette(routes=[Route("/inc", inc)]),
                             store=RedisStore(server.url), secret_key=SECRET, on_event=hook,
                             idle_timeout=0.3)


async def test_an_expired_session_is_an_event_where_the_store_can_tell(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    """RedisStore with keyspace notifications on: the hook hears the expiry,
    from the store's listener, with the session's store key."""
    server = redis_server_factory(notify="Ex")
    seen: list[SessionEvent] = []
    expired = asyncio.Event()

    def hook(event: SessionEvent) -> None:
        seen.append(event)
        if event.kind == "expired":
            expired.set()

    app = expiring_app(server, hook)
    await app.core.check()  # sets the store up: the core starts watching
    await asyncio.to_thread(subscribed, server.port, 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        await client.get("/inc")
    await asyncio.wait_for(expired.wait(), 10.0)
    assert [e.kind for e in seen] == ["created", "expired"]
    assert seen[1].store_key == seen[0].store_key and seen[1].session == {}
    await app.core.aclose()


async def test_an_admin_with_hooks_leaves_the_expiries_to_the_app(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    """An operator's SessionAdmin(on_event=...) on the app's store hears what
    it does (revoked), never expiries: claiming one would take it from the
    app's hook."""
    server = redis_server_factory(notify="Ex")
    app_saw: list[str] = []
    admin_saw: list[str] = []
    expired = asyncio.Event()

    def hook(event: SessionEvent) -> None:
        app_saw.append(event.kind)
        if event.kind == "expired":
            expired.set()

    app = expiring_app(server, hook)
    await app.core.check()
    async with SessionAdmin(RedisStore(server.url), secret_key=SECRET,
                            on_event=lambda e: admin_saw.append(e.kind)):
        await asyncio.to_thread(subscribed, server.port, 1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            await client.get("/inc")
        await asyncio.wait_for(expired.wait(), 10.0)
        await asyncio.to_thread(subscribed, server.port, 1)  # still the app's alone
    assert app_saw == ["created", "expired"] and admin_saw == []
    await app.core.aclose()


def test_an_expired_session_is_an_event_under_wsgi(
        redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(notify="Ex")
    seen: list[SessionEvent] = []
    expired = threading.Event()

    def hook(event: SessionEvent) -> None:
        seen.append(event)
        if event.kind == "expired":
            expired.set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[SESSION_KEY]["n"] = 1
        start_response("200 OK", [])
        return [b"ok"]

    middleware = WSGISessionMiddleware(app, store=RedisStore(server.url), secret_key=SECRET,
                                       on_event=hook, idle_timeout=0.3)
    subscribed(server.port, 1)  # the startup check set the store up and began watching
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://t") as client:
        assert client.get("/").status_code == 200
    assert expired.wait(10.0)
    assert [e.kind for e in seen] == ["created", "expired"]
    assert seen[1].store_key == seen[0].store_key
    middleware.close()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {metric.name: list(metric.data.data_points)
            for resource in data.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics}


async def test_metrics(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    gate = {"entered": asyncio.Event(), "release": asyncio.Event()}
    path = tmp_path / "s.db"
    app = app_with(path, gate, meter_provider=MeterProvider(metric_readers=[reader]),
                   lock_timeout=0.3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        for _ in range(3):
            await client.get("/inc")
        holder = asyncio.create_task(client.get("/hold"))
        await gate["entered"].wait()
        assert (await client.get("/inc")).status_code == 503  # timed out behind the holder
        # Another process deletes the held session: the holder's commit finds its lease gone.
        with sqlite3.connect(path) as other:
            other.execute("DELETE FROM sessionware_sessions")
        gate["release"].set()
        assert (await holder).status_code == 409  # LeaseLost: a conflict, nothing saved
    got = points(reader)
    assert [p.value for p in got["sessionware.sessions.created"]] == [1]
    (waits,) = got["sessionware.lock.wait.duration"]
    assert waits.count == 3  # the two /inc after the first, and /hold
    (refusal,) = got["sessionware.lock.refusals"]
    assert refusal.value == 1 and refusal.attributes["sessionware.refusal"] == "timeout"
    assert [p.value for p in got["sessionware.lease.lost"]] == [1]
    operations = {p.attributes["sessionware.store.operation"]: p.count
                  for p in got["sessionware.store.operation.duration"]}
    assert operations["acquire"] >= 3 and operations["create"] == 1
    assert operations["commit"] >= 2
    assert {p.attributes["sessionware.store.name"]
            for p in got["sessionware.store.operation.duration"]} == {"SQLiteStore"}
    (sizes,) = got["sessionware.session.size"]
    assert sizes.count >= 4 and sizes.min > 0
    await app.core.aclose()
