"""sessionware.django under Django's async handler (ASGI), through Django's
AsyncClient: the async face, the session loaded before the view runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, override_settings

from tests.web.django.conftest import Configure, make_store

COOKIE = "sessionid"


def with_cookie(value: str, **kwargs: Any) -> AsyncClient:
    client = AsyncClient(**kwargs)
    client.cookies[COOKIE] = value
    return client


async def test_an_async_view_round_trips(aconfigure: Configure) -> None:
    client = AsyncClient()
    first = await client.get("/ainc")
    assert first.content == b"1" and first.cookies[COOKIE]["httponly"]
    assert (await client.get("/ainc")).content == b"2"
    assert (await client.get("/an")).content == b"2"


async def test_a_sync_view_under_asgi_finds_the_session_loaded(aconfigure: Configure) -> None:
    client = AsyncClient()
    assert (await client.get("/inc")).content == b"1"  # runs in a thread: no loading there
    assert (await client.get("/inc")).content == b"2"
    assert (await client.get("/read")).content == b"2"
    assert (await client.get("/read-write")).content == b"refused"
    assert (await client.get("/none")).content == b"nothing, refused"


async def test_a_raising_view_changes_nothing(aconfigure: Configure) -> None:
    aconfigure(LOCK_TIMEOUT=1)
    client = AsyncClient()
    await client.get("/ainc")
    with pytest.raises(RuntimeError, match="view failed"):
        await client.get("/boom")
    assert (await client.get("/server-error")).status_code == 503
    assert (await client.get("/ainc")).content == b"2"


async def test_a_streamed_response_commits_before_its_body(aconfigure: Configure) -> None:
    client = AsyncClient()
    await client.get("/ainc")
    response = await client.get("/stream")
    body = b"".join(response.streaming_content)  # a sync iterator, as the view made it
    assert body == b"streamed after the commit"
    assert (await client.get("/an")).content == b"2"


async def test_acycle_key_and_aflush(aconfigure: Configure) -> None:
    client = AsyncClient()
    await client.get("/ainc")
    old = client.cookies[COOKIE].value
    assert (await client.get("/acycle")).content == b"1"
    assert client.cookies[COOKIE].value != old
    assert (await with_cookie(old).get("/an")).content == b"0"
    assert (await client.get("/an")).content == b"1"
    flushed = await client.get("/aflush")
    assert flushed.cookies[COOKIE].value == ""
    assert (await client.get("/an")).content == b"0"


async def test_lazy_mode_loads_declared_views_only(aconfigure: Configure) -> None:
    client = AsyncClient(raise_request_exception=False)
    await client.get("/ainc")
    aconfigure(setting={"CSRF_USE_SESSIONS": False}, LOCK_MODE="lazy")
    lazy = with_cookie(client.cookies[COOKIE].value, raise_request_exception=False)
    assert (await lazy.get("/ainc")).status_code == 500  # undeclared: SessionNotLoaded
    assert (await lazy.get("/read")).content == b"1"


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_concurrent_requests_of_one_session_are_all_applied(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    factory = request.getfixturevalue("redis_server_factory") if kind == "redis" else None
    store = make_store(kind, tmp_path, factory)
    try:
        with override_settings(SESSIONWARE={"STORE": store}):
            client = AsyncClient()
            await client.get("/ainc")
            answers = await asyncio.gather(*(client.get("/ainc", {"delay": "0.01"})
                                             for _ in range(19)))
            assert sorted(int(a.content) for a in answers) == list(range(2, 21))
            assert (await client.get("/an")).content == b"20"
    finally:
        await store.aclose()
        store.sync().close()


async def test_a_client_that_disconnects_releases_the_lock(aconfigure: Configure) -> None:
    aconfigure(LOCK_TIMEOUT=1)
    client = AsyncClient()
    await client.get("/ainc")
    cookie = client.cookies[COOKIE].value
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": b"", "more_body": False},
                     {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/ainc", "raw_path": b"/ainc",
             "query_string": b"delay=30", "root_path": "", "server": ("testserver", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"testserver"),
                         (b"cookie", f"{COOKIE}={cookie}".encode())]}
    await ASGIHandler()(scope, receive, send)  # cancelled as the client went away
    assert not sent  # nothing was answered
    # the lock was released, and the cancelled view's change not saved
    assert (await client.get("/ainc")).content == b"2"
