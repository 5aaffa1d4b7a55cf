"""The ASGI middleware under Litestar, in process: ``request.session``,
``request.set_session()`` with a dict or a model, ``request.clear_session()``,
regenerate, lock modes ``read`` and ``lazy``, on a real SQLite store whose
operations are counted and whose records are read back past the middleware.

The app is tests/support/apps/litestar_counter.py; under uvicorn see
test_uvicorn.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionware._async.core import RETIRED
from sessionware.cookies import CookieSigner, store_key
from sessionware.stores import SQLiteStore
from tests.support.apps.litestar_counter import SECRET, build_app, build_wrapped_app
from tests.support.helpers import CountingStore, cookie_header, session_cookie, set_cookies
from tests.test_startup_check import start_up

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    counted = CountingStore(SQLiteStore(tmp_path / "sessions.db"))
    yield counted
    await counted.aclose()


@pytest.fixture
def client(store: CountingStore) -> Client:
    """A client of the app over ``store``: ``client(lock_mode="lazy")``,
    ``client(wrapped=True)`` (the middleware around the whole app)."""
    @asynccontextmanager
    async def make(wrapped: bool = False, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = (build_wrapped_app if wrapped else build_app)(store, **options)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=10) as http:
            yield http
    return make


def key_of(cookie: str) -> str:
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    return store_key(session_id)


async def stored(store: CountingStore, cookie: str) -> bytes | None:
    """What the store holds for the session of ``cookie``, read past the middleware."""
    return await store.inner.read(key_of(cookie))


def operations(store: CountingStore) -> dict[str, int]:
    """The store operations counted, but ``setup``: Litestar makes a middleware
    per route handler, and each sets the store up at its first request."""
    return {op: n for op, n in store.calls.items() if op != "setup"}


async def started(http: httpx.AsyncClient) -> str:
    """A new session holding ``{"n": 1}``; its cookie."""
    response = await http.get("/inc?delay=0")
    assert response.text == "1"
    cookie = session_cookie(response)
    assert cookie
    return cookie


async def data(http: httpx.AsyncClient, cookie: str) -> Any:
    """The session's data, as the app reads it."""
    response = await http.get("/data", headers=cookie_header(cookie))
    assert response.status_code == 200
    return response.json()


async def test_request_session_reads_and_writes(client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = await started(http)
        for expected in ("2", "3"):
            response = await http.get("/inc", headers=cookie_header(cookie))
            assert response.text == expected
            assert not set_cookies(response)
        store.calls.clear()
        assert (await http.get("/n", headers=cookie_header(cookie))).text == "3"
        assert operations(store) == {"read": 1}  # lock mode read: a snapshot
    assert await stored(store, cookie) == b'{"n":3}'


async def test_set_session_replaces_the_data(client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = await started(http)
        store.calls.clear()
        response = await http.get("/set?user=bob", headers=cookie_header(cookie))
        assert response.status_code == 200
        assert not set_cookies(response)  # the same session, written in place
        assert operations(store) == {"acquire": 1, "commit": 1}
        assert await data(http, cookie) == {"user": "bob", "items": []}


async def test_set_session_starts_a_session(client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = session_cookie(await http.get("/set?user=bob"))
        assert cookie
        assert await stored(store, cookie) == b'{"user":"bob","items":[]}'


@pytest.mark.parametrize("kind", ["dataclass", "pydantic", "msgspec"])
async def test_set_session_with_a_model_is_stored_as_its_fields(
        client: Client, store: CountingStore, kind: str) -> None:
    async with client() as http:
        cookie = await started(http)
        response = await http.get(f"/set-model?kind={kind}&user=ann",
                                  headers=cookie_header(cookie))
        assert response.status_code == 200
        assert await data(http, cookie) == {"user": "ann", "items": ["a", "b"]}


@pytest.mark.parametrize("path", ["/clear", "/set-none"])
async def test_clear_session_invalidates(client: Client, store: CountingStore,
                                         path: str) -> None:
    async with client() as http:
        cookie = await started(http)
        response = await http.get(path, headers=cookie_header(cookie))
        assert response.status_code == 200
        assert session_cookie(response) == ""  # the cookie is expired
        assert await stored(store, cookie) is None  # the record is gone
        again = await http.get("/inc", headers=cookie_header(cookie))
        assert again.text == "1"  # the old cookie names no session: a new one starts
        assert session_cookie(again) not in ("", cookie)


async def test_a_failing_handler_after_set_session_changes_nothing(
        client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = await started(http)
        for path in ("/set-then-fail", "/boom"):
            response = await http.get(path, headers=cookie_header(cookie))
            assert response.status_code == 500
            assert not set_cookies(response)
        # the lock was released: the next request is answered at once
        response = await asyncio.wait_for(http.get("/inc", headers=cookie_header(cookie)), 5)
        assert response.text == "2"


@pytest.mark.parametrize("kind", ["number", "text", "set"])
async def test_a_replacement_that_is_no_mapping_is_refused(
        client: Client, store: CountingStore, caplog: pytest.LogCaptureFixture,
        kind: str) -> None:
    async with client() as http:
        cookie = await started(http)
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            response = await http.get(f"/set-bad?kind={kind}", headers=cookie_header(cookie))
        assert response.status_code == 500
        assert response.text == "Session could not be saved.\n"
        assert "not a mapping" in caplog.text
        assert await stored(store, cookie) == b'{"n":1}'
        response = await asyncio.wait_for(http.get("/inc", headers=cookie_header(cookie)), 5)
        assert response.text == "2"


async def test_read_mode_refuses_a_replacement_as_it_refuses_a_change(
        client: Client, store: CountingStore, caplog: pytest.LogCaptureFixture) -> None:
    async with client() as http:
        cookie = await started(http)
        for path in ("/snapshot/set?user=eve", "/snapshot/clear"):
            with caplog.at_level(logging.ERROR, logger="sessionware"):
                response = await http.get(path, headers=cookie_header(cookie))
            assert response.status_code == 500, path
            assert not set_cookies(response)
        assert caplog.text.count("read-only in this request") == 2
        # an equal copy is no change
        response = await http.get("/snapshot/same", headers=cookie_header(cookie))
        assert response.status_code == 200
        assert await stored(store, cookie) == b'{"n":1}'


async def test_a_replacement_after_an_early_commit_is_refused(
        client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = await started(http)
        response = await http.get("/early-then-set", headers=cookie_header(cookie))
        assert response.status_code == 500
        assert await stored(store, cookie) == b'{"n":2}'  # what the commit saved


async def test_regenerate_moves_the_session_to_a_new_cookie(
        client: Client, store: CountingStore) -> None:
    async with client() as http:
        cookie = await started(http)
        response = await http.get("/login?user=al", headers=cookie_header(cookie))
        new = session_cookie(response)
        assert new and new != cookie
        assert await data(http, new) == {"n": 1, "user": "al"}
        assert await stored(store, cookie) == RETIRED
        assert await data(http, cookie) == {}  # the old cookie no longer opens it


async def test_lazy_mode_locks_a_replaced_session_as_the_response_starts(
        client: Client, store: CountingStore) -> None:
    async with client(lock_mode="lazy") as http:
        store.calls.clear()
        assert (await http.get("/hello")).text == "hello"  # not loaded: no store trip
        assert store.total() == 0
        cookie = session_cookie(await http.get("/set?user=bob"))
        assert cookie
        store.calls.clear()
        response = await http.get("/set?user=carol", headers=cookie_header(cookie))
        assert response.status_code == 200
        assert operations(store) == {"acquire": 1, "commit": 1}
        assert await stored(store, cookie) == b'{"user":"carol","items":[]}'
        response = await http.get("/loaded/set?user=dan", headers=cookie_header(cookie))
        assert response.status_code == 200
        assert (await http.get("/loaded/data", headers=cookie_header(cookie))).json() == {
            "user": "dan"}
        response = await http.get("/clear", headers=cookie_header(cookie))
        assert session_cookie(response) == ""
        assert await stored(store, cookie) is None


async def test_lazy_mode_keeps_the_loaded_session(client: Client, store: CountingStore) -> None:
    """load_session() puts the loaded session in scope["session"]: not a replacement."""
    async with client(lock_mode="lazy") as http:
        cookie = session_cookie(await http.get("/set?user=bob"))
        assert cookie
        response = await http.get("/login?user=al", headers=cookie_header(cookie))
        new = session_cookie(response)
        assert new and new != cookie
        assert (await http.get("/loaded/data", headers=cookie_header(new))).json() == {
            "user": "al", "items": []}


async def test_around_the_whole_app(client: Client, store: CountingStore) -> None:
    async with client(wrapped=True) as http:
        cookie = await started(http)
        await http.get("/set-model?kind=pydantic&user=ann", headers=cookie_header(cookie))
        assert await data(http, cookie) == {"user": "ann", "items": ["a", "b"]}
        response = await http.get("/clear", headers=cookie_header(cookie))
        assert session_cookie(response) == ""
        assert await stored(store, cookie) is None


async def test_around_the_whole_app_the_start_up_checks_the_store(tmp_path: Path) -> None:
    app = build_wrapped_app(SQLiteStore(tmp_path / "no" / "sessions.db"))
    answer = await start_up(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "session store cannot serve" in answer["message"]
