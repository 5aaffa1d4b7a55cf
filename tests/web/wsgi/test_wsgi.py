"""What only the WSGI driver has, with a plain WSGI app (no framework), on
MemoryStore and SQLiteStore: when ``start_response`` comes, bodies closed
unread, ``commit_session`` and ``abandon_session``, the environ.

Requests go through werkzeug's test client or are made by hand, as a server
makes them. The middleware's behaviour shared with ASGI (cookies, lock modes,
failures, concurrency, renewals) is the middleware suite's, which runs the
WSGI middleware on every store's sync face (tests/support/middleware_suite.py); real
servers are tests/web/wsgi/test_servers.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, EnvironBuilder, TestResponse

from sessionware import ConfigurationError, Rule, SessionNotLoaded
from sessionware.stores import MemoryStore, SQLiteStore, Store, SyncMemoryStore
from sessionware.wsgi import WSGISessionMiddleware, abandon_session, commit_session
from tests.support.apps.wsgi_counter import MODES, SECRET, CounterApp
from tests.support.faces import sync_face
from tests.support.helpers import CountingStore, SyncCountingStore

Factory = Callable[..., WSGISessionMiddleware]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "sessions.db")


@pytest.fixture
def counting(store: Store) -> Iterator[SyncCountingStore]:
    counting = SyncCountingStore(sync_face(store))
    yield counting
    counting.close()


@pytest.fixture
def app() -> Iterator[CounterApp]:
    app = CounterApp()
    yield app
    app.release.set()  # no request thread outlives its test


@pytest.fixture
def make(counting: SyncCountingStore, app: CounterApp) -> Factory:
    def factory(**options: Any) -> WSGISessionMiddleware:
        options.setdefault("secret_key", SECRET)
        options.setdefault("lock_mode", MODES)
        # counts start at the first request (the startup check: test_startup_check.py)
        options.setdefault("check_store", False)
        return WSGISessionMiddleware(app, store=counting, **options)

    return factory


@pytest.fixture
def client(make: Factory) -> Client:
    return Client(make())


def set_cookies(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def cookie_of(client: Client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def call(middleware: WSGISessionMiddleware, path: str, cookie: str, *, read: bool = True
         ) -> tuple[list[str], list[tuple[str, str]], bytes]:
    """One request by hand, as a server makes it; returns what it was told."""
    environ = EnvironBuilder(path, headers=[("Cookie", f"session={cookie}")]).get_environ()
    told: list[str] = []
    headers: list[tuple[str, str]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        told.append(status)
        headers[:] = response_headers
        return lambda data: None

    body = middleware(environ, start_response)
    try:
        data = b"".join(body) if read else b""
    finally:
        getattr(body, "close")()  # noqa: B009 - the WSGI protocol's close()
    return told, headers, data


# -- the store's face -------------------------------------------------------------

def test_the_middleware_runs_on_the_stores_sync_twin(tmp_path: Path, app: CounterApp) -> None:
    store = SQLiteStore(tmp_path / "sessions.db", busy_timeout=1.5)
    middleware = WSGISessionMiddleware(app, store=store, secret_key=SECRET)
    try:
        twin = middleware.core.store
        assert type(twin).__name__ == "SyncSQLiteStore"
        assert (twin._path, twin._runner.busy_timeout) == (store._path, 1.5)  # the same arguments
        assert Client(middleware).get("/inc?delay=0").text == "1"
    finally:
        middleware.close()


def test_one_store_given_to_two_wsgi_apps_is_one_store(app: CounterApp) -> None:
    """Two middlewares over one store instance (two apps of a process, or
    Flask's key rotation) serve the same sessions: the store's sync face is
    made once, not once per middleware (for MemoryStore, a twin of its own
    would be another dict)."""
    store = MemoryStore()
    one = WSGISessionMiddleware(app, store=store, secret_key=SECRET)
    other = WSGISessionMiddleware(app, store=store, secret_key=SECRET)
    client = Client(one)
    assert client.get("/inc?delay=0").text == "1"
    visitor = Client(other)
    visitor.set_cookie("session", cookie_of(client))
    assert visitor.get("/inc?delay=0").text == "2"


def test_a_sync_store_is_used_as_it_is(app: CounterApp) -> None:
    store = SyncMemoryStore()
    middleware = WSGISessionMiddleware(app, store=store, secret_key=SECRET)
    assert middleware.core.store is store
    assert Client(middleware).get("/inc?delay=0").text == "1"


def test_a_store_without_a_blocking_face_is_refused(app: CounterApp) -> None:
    with pytest.raises(ConfigurationError, match="CountingStore has no blocking face"):
        WSGISessionMiddleware(app, store=CountingStore(MemoryStore()), secret_key=SECRET)


# -- when start_response comes -----------------------------------------------------------

def test_lazy_start_response_commits_at_the_first_step(client: Client, app: CounterApp
                                                        ) -> None:
    response = client.get("/lazy")
    assert response.text == "first;second"
    assert set_cookies(response)
    assert client.get("/n").text == "1"
    assert app.closed == ["lazy"]


def test_failed_commit_at_a_lazy_start_replaces_the_body(make: Factory, app: CounterApp
                                                         ) -> None:
    client = Client(make(max_size=1024))
    client.get("/inc")
    response = client.get("/lazy?size=5000")
    assert response.status_code == 500
    assert response.text == "Session could not be saved.\n"
    assert app.closed == ["lazy"]  # the app's iterable was closed, not drained
    assert client.get("/n").text == "1"


def test_closing_the_body_unread_releases_the_lock(make: Factory) -> None:
    middleware = make()
    client = Client(middleware)
    client.get("/inc")
    # The server gives up before the generator app ever ran: the client went away.
    told, _, _ = call(middleware, "/lazy", cookie_of(client), read=False)
    assert told == []
    started = time.monotonic()
    assert client.get("/inc").text == "2"
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("path", ["/handled-failure", "/abandoned"])
def test_framework_error_pages_change_nothing(make: Factory, path: str) -> None:
    """start_response with exc_info, or abandon_session: the app says it failed."""
    middleware = make()
    client = Client(middleware)
    client.get("/inc")
    told, headers, _ = call(middleware, path, cookie_of(client))
    assert told == ["500 Internal Server Error"]
    assert "Set-Cookie" not in dict(headers)
    assert client.get("/inc").text == "2"


def test_commit_session_needs_a_session() -> None:
    with pytest.raises(SessionNotLoaded):
        commit_session({})


def test_abandon_session_without_a_session_does_nothing() -> None:
    abandon_session({})


# -- the environ ------------------------------------------------------------------------

def test_none_mode_puts_no_session_in_the_environ(client: Client, counting: SyncCountingStore
                                                  ) -> None:
    assert client.get("/static/x").text == "no session"
    client.get("/inc")
    assert client.get("/static/x").text == "no session"  # with a session cookie too
    assert counting.calls["read"] == counting.calls["acquire"] == 0


def test_mode_rules_see_the_method(make: Factory) -> None:
    client = Client(make(lock_mode=[Rule("none", methods=["POST"])]))
    assert client.post("/static/x").text == "no session"
    assert client.get("/static/x").text == "session"
