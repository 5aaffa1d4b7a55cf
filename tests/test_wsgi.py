"""The WSGI driver, with a plain WSGI app (no framework).

Protocol details go through werkzeug's test client or hand-built environs;
whatever is about concurrency goes through a real threaded server (werkzeug's
``ThreadedWSGIServer`` on a free loopback port) and real parallel clients.
Every test runs on MemoryStore and on SQLiteStore.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

import httpx
import pytest
from werkzeug.serving import make_server
from werkzeug.test import Client, EnvironBuilder, TestResponse

from sessionware import Rule, SessionClosed
from sessionware.cookies import CookieSigner, new_session_id, store_key
from sessionware.stores import MemoryStore, SQLiteStore, Store
from sessionware.stores.base import Lease, Locked
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware, commit_session, discard_session
from tests.helpers import CountingStore, cookie_header, session_cookie

SECRET = "test-secret-0123456789abcdef0123456789"
MODES = [Rule("read", paths=["/n", "/snapshot"]), Rule("none", paths=["/static"])]


# -- the app ----------------------------------------------------------------------

class CounterApp:
    """A plain WSGI app: one method per path, ``environ["sessionware.session"]``."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.closed: list[str] = []  # paths whose response iterable was closed

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        name = environ["PATH_INFO"].strip("/").replace("/", "_").replace("-", "_")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        handler: Callable[..., Iterable[bytes]] = getattr(self, name)
        return handler(environ.get(SESSION_KEY), query, start_response, environ)

    @staticmethod
    def text(start_response: StartResponse, body: str, status: str = "200 OK") -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        return [body.encode()]

    def inc(self, session: Any, query: dict[str, str], start: StartResponse, _: Any
            ) -> list[bytes]:
        n = session.get("n", 0)
        time.sleep(float(query.get("delay", "0.005")))
        session["n"] = n + 1
        return self.text(start, str(n + 1))

    def n(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        return self.text(start, str(session.get("n", 0)))

    def hello(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        return self.text(start, "hello")

    def static_x(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        return self.text(start, "no session" if session is None else "session")

    def boom(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        session["n"] = 999
        raise RuntimeError("handler failed after changing the session")

    def error_page(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        """A framework's own error page: start_response with exc_info."""
        session["n"] = 999
        try:
            raise RuntimeError("caught by the framework")
        except RuntimeError:
            start("500 Internal Server Error", [], sys.exc_info())
        return [b"error page"]

    def discarded(self, session: Any, _: Any, start: StartResponse, environ: Any
                  ) -> list[bytes]:
        session["n"] = 999
        discard_session(environ)
        return self.text(start, "oops", "500 Internal Server Error")

    def status(self, session: Any, query: dict[str, str], start: StartResponse, _: Any
               ) -> list[bytes]:
        """A plain 5xx answer, with no exception and no exc_info."""
        session["n"] = session.get("n", 0) + 1
        return self.text(start, "status", query["status"])

    def stream_nested(self, session: Any, _: Any, start: StartResponse, __: Any
                      ) -> Iterator[bytes]:
        """A nested change while the body streams, after the commit."""
        session["cart"] = ["a"]
        start("200 OK", [("Content-Type", "text/plain")])
        yield b"streaming;"
        session["cart"].append("lost")
        yield b"done"

    def big(self, session: Any, query: dict[str, str], start: StartResponse, _: Any
            ) -> list[bytes]:
        session["blob"] = "x" * int(query["size"])
        return self.text(start, "ok")

    def unserializable(self, session: Any, _: Any, start: StartResponse, __: Any
                       ) -> list[bytes]:
        session["n"] = 5
        session["bad"] = {1, 2}
        return self.text(start, "ok")

    def login(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        session.regenerate()
        session["user"] = "alice"
        return self.text(start, "ok")

    def logout(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        session.invalidate()
        return self.text(start, "ok")

    def snapshot_mutate(self, session: Any, _: Any, start: StartResponse, __: Any
                        ) -> list[bytes]:
        try:
            session["n"] = 1
        except SessionClosed as exc:
            return self.text(start, f"refused: {exc}")
        return self.text(start, "changed", "500 Internal Server Error")  # pragma: no cover

    def hold(self, session: Any, _: Any, start: StartResponse, __: Any) -> list[bytes]:
        session["n"] = session.get("n", 0) + 1000
        self.holding.set()
        self.release.wait(30)
        return self.text(start, "released")

    def early(self, session: Any, _: Any, start: StartResponse, environ: WSGIEnvironment
              ) -> Iterator[bytes]:
        session["n"] = session.get("n", 0) + 1
        commit_session(environ)
        with pytest.raises(SessionClosed):
            session["n"] = -1
        start("200 OK", [("Content-Type", "text/plain")])
        yield b"committed;"
        self.holding.set()
        self.release.wait(30)
        yield b"done"

    def lazy(self, session: Any, query: dict[str, str], start: StartResponse, _: Any
             ) -> Iterator[bytes]:
        """A generator app: start_response only runs at the first step."""
        try:
            session["n"] = session.get("n", 0) + 1
            session["blob"] = "x" * int(query.get("size", "0"))
            start("200 OK", [("Content-Type", "text/plain")])
            yield b"first;"
            yield b"second"
        finally:
            self.closed.append("lazy")


# -- fixtures -----------------------------------------------------------------------

@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "sessions.db")


@pytest.fixture
def counting(store: Store) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def app() -> Iterator[CounterApp]:
    app = CounterApp()
    yield app
    app.release.set()  # no request thread outlives its test


Factory = Callable[..., WSGISessionMiddleware]
Serve = Callable[[WSGISessionMiddleware], httpx.Client]


@pytest.fixture
def make(counting: CountingStore, app: CounterApp) -> Iterator[Factory]:
    made: list[WSGISessionMiddleware] = []

    def factory(**options: Any) -> WSGISessionMiddleware:
        options.setdefault("secret_key", SECRET)
        options.setdefault("lock_mode", MODES)
        options.setdefault("store", counting)
        made.append(WSGISessionMiddleware(app, **options))
        return made[-1]

    yield factory
    if made:
        made[0].close()  # one store: closing it once closes it


@pytest.fixture
def client(make: Factory) -> Client:
    return Client(make())


def serve(app: WSGISessionMiddleware) -> Any:
    """Serve ``app`` with werkzeug's threaded server on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def served(make: Factory) -> Iterator[Serve]:
    """Start a real server for a middleware; returns an httpx client for it."""
    running: list[Any] = []
    clients: list[httpx.Client] = []

    def start(middleware: WSGISessionMiddleware) -> httpx.Client:
        server, thread = serve(middleware)
        running.append((server, thread))
        limits = httpx.Limits(max_connections=64)
        clients.append(httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}",
                                    timeout=10, limits=limits))
        return clients[-1]

    yield start
    for http in clients:
        http.close()
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(10)


def set_cookies(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def cookie_of(client: Client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def background(call: Callable[[], httpx.Response]) -> Any:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


# -- commit before the headers --------------------------------------------------------

def test_first_write_sets_the_cookie_in_the_headers(client: Client) -> None:
    response = client.get("/inc")
    assert response.text == "1"
    (header,) = set_cookies(response)
    assert header.startswith("session=")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    assert CookieSigner(SECRET).unsign(cookie_of(client)) is not None
    assert client.get("/inc").text == "2"
    assert client.get("/n").text == "2"


def test_https_cookies_are_secure(make: Factory) -> None:
    response = Client(make()).get("/inc", base_url="https://localhost")
    assert "Secure" in set_cookies(response)[0]


def test_round_trips_are_two_one_zero(client: Client, counting: CountingStore) -> None:
    client.get("/inc")
    counting.calls.clear()
    client.get("/inc")
    assert dict(counting.calls) == {"acquire": 1, "commit": 1}
    counting.calls.clear()
    client.get("/n")
    assert dict(counting.calls) == {"read": 1}
    counting.calls.clear()
    client.get("/hello")
    assert dict(counting.calls) == {"acquire": 1, "release": 1}


def test_lazy_start_response_commits_at_the_first_step(client: Client, app: CounterApp
                                                        ) -> None:
    response = client.get("/lazy")
    assert response.text == "first;second"
    assert set_cookies(response)
    assert client.get("/n").text == "1"
    assert app.closed == ["lazy"]


# -- failures change nothing -----------------------------------------------------------

def test_app_raising_changes_nothing_and_frees_the_lock(client: Client) -> None:
    client.get("/inc")
    with pytest.raises(RuntimeError):
        client.get("/boom")
    started = time.monotonic()
    assert client.get("/inc").text == "2"
    assert time.monotonic() - started < 1.0


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


@pytest.mark.parametrize("path", ["/error-page", "/discarded"])
def test_framework_error_pages_change_nothing(make: Factory, path: str) -> None:
    middleware = make()
    client = Client(middleware)
    client.get("/inc")
    told, headers, _ = call(middleware, path, cookie_of(client))
    assert told == ["500 Internal Server Error"]
    assert "Set-Cookie" not in dict(headers)
    assert client.get("/inc").text == "2"


@pytest.mark.parametrize(("status", "saved"), [
    ("500 Internal Server Error", False), ("503 Service Unavailable", False),
    ("404 Not Found", True),
])
def test_a_5xx_response_commits_nothing(client: Client, status: str, saved: bool) -> None:
    client.get("/inc")
    assert client.get("/status", query_string={"status": status}).status == status
    assert client.get("/n").text == ("2" if saved else "1")


def test_a_nested_change_while_streaming_is_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="sessionware"):
        response = client.get("/stream-nested")
        assert response.text == "streaming;done"
        response.close()  # as a server does once the body is sent
    (record,) = [r for r in caplog.records if r.name == "sessionware"]
    assert "not saved" in record.getMessage()


def test_commit_on_5xx_opts_in(make: Factory) -> None:
    client = Client(make(commit_on_5xx=True))
    client.get("/inc")
    client.get("/status", query_string={"status": "500 Internal Server Error"})
    assert client.get("/n").text == "2"


def test_closing_the_body_unread_releases_the_lock(make: Factory, app: CounterApp) -> None:
    middleware = make()
    client = Client(middleware)
    client.get("/inc")
    # The server gives up before the generator app ever ran: the client went away.
    told, _, _ = call(middleware, "/lazy", cookie_of(client), read=False)
    assert told == []
    started = time.monotonic()
    assert client.get("/inc").text == "2"
    assert time.monotonic() - started < 1.0


def test_oversized_session_is_refused_and_stored_session_kept(make: Factory) -> None:
    client = Client(make(max_size=1024))
    client.get("/inc")
    response = client.get("/big?size=5000")
    assert response.status_code == 500
    assert response.text == "Session could not be saved.\n"
    assert client.get("/n").text == "1"
    assert client.get("/inc").text == "2"  # and the lock was released


def test_failed_commit_at_a_lazy_start_replaces_the_body(make: Factory, app: CounterApp
                                                         ) -> None:
    client = Client(make(max_size=1024))
    client.get("/inc")
    response = client.get("/lazy?size=5000")
    assert response.status_code == 500
    assert response.text == "Session could not be saved.\n"
    assert app.closed == ["lazy"]  # the app's iterable was closed, not drained
    assert client.get("/n").text == "1"


def test_unserializable_value_gives_500_and_keeps_the_session(client: Client) -> None:
    client.get("/inc")
    assert client.get("/unserializable").status_code == 500
    assert client.get("/n").text == "1"


def test_store_errors_give_503(tmp_path: Path, app: CounterApp) -> None:
    broken = SQLiteStore(tmp_path / "missing-directory" / "sessions.db")
    middleware = WSGISessionMiddleware(app, store=broken, secret_key=SECRET, lock_mode=MODES)
    try:
        client = Client(middleware, use_cookies=False)
        response = client.get("/inc")  # fails at the commit: creating the session
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert not set_cookies(response)
        cookie = CookieSigner(SECRET).sign(new_session_id())
        response = client.get("/inc", headers={"Cookie": f"session={cookie}"})
        assert response.status_code == 503  # fails at the open: loading it
    finally:
        middleware.close()


@pytest.mark.parametrize("options", [
    pytest.param({"busy_timeout": 0.1}, id="store-refuses"),
    pytest.param({"busy_timeout": 30.0}, id="store-too-slow"),
])
def test_sqlite_write_lock_held_elsewhere_gives_503_then_recovers_intact(
    tmp_path: Path, app: CounterApp, options: dict[str, float]
) -> None:
    """The request thread tries SQLite itself without waiting; a write lock held
    by another process sends the operation to the store's worker thread, which
    waits up to ``busy_timeout`` and within ``store_timeout``. Reads are served
    meanwhile (WAL readers pass a writer), and nothing is half-written."""
    path = tmp_path / "sessions.db"
    middleware = WSGISessionMiddleware(app, store=SQLiteStore(path, **options),
                                       secret_key=SECRET, lock_mode=MODES, store_timeout=0.5)
    try:
        client = Client(middleware)
        assert client.get("/inc?delay=0").text == "1"
        with database_locked(path):
            response = client.get("/inc?delay=0")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert client.get("/n").text == "1"
        # a timed-out acquire may still take the lease once the lock is free;
        # it lapses within lease_ttl, and the next request waits that out
        assert client.get("/inc?delay=0").text == "2"
    finally:
        middleware.close()


def test_sqlite_write_lock_held_elsewhere_is_waited_for(tmp_path: Path, app: CounterApp
                                                        ) -> None:
    """Within ``busy_timeout`` the request waits for the other writer, on the
    store's worker thread, and then succeeds."""
    path = tmp_path / "sessions.db"
    middleware = WSGISessionMiddleware(app, store=SQLiteStore(path, busy_timeout=30),
                                       secret_key=SECRET, lock_mode=MODES)
    try:
        client = Client(middleware)
        assert client.get("/inc?delay=0").text == "1"
        with database_locked(path) as unlock:
            threading.Timer(0.3, unlock).start()  # while the request waits for it
            started = time.monotonic()
            assert client.get("/inc?delay=0").text == "2"
            assert time.monotonic() - started >= 0.25  # it did wait
    finally:
        middleware.close()


@contextmanager
def database_locked(path: Path) -> Iterator[Callable[[], None]]:
    """Another process's view: a connection holding SQLite's write lock until
    the block ends or the function it yields is called (from any thread)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    done = threading.Lock()

    def unlock() -> None:
        if done.acquire(blocking=False):
            other.execute("ROLLBACK")
            other.close()

    other.execute("BEGIN EXCLUSIVE")
    try:
        yield unlock
    finally:
        unlock()


# -- cookies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "garbage", "", "a.b.c", "x" * 5000, "é", "\"quoted\"",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.badsig",
])
def test_garbage_cookies_start_a_fresh_session(make: Factory, value: str) -> None:
    client = Client(make(), use_cookies=False)
    response = client.get("/inc", headers={"Cookie": f"session={value}"})
    assert response.status_code == 200
    assert response.text == "1"
    (header,) = set_cookies(response)
    issued = header.split(";")[0].removeprefix("session=")
    assert issued not in ("", value) and CookieSigner(SECRET).unsign(issued) is not None


def test_regenerate_moves_the_data_to_a_new_id(client: Client) -> None:
    client.get("/inc")
    old = cookie_of(client)
    client.get("/login")
    new = cookie_of(client)
    assert new != old
    assert client.get("/n").text == "1"
    client.set_cookie("session", old)
    assert client.get("/n").text == "0"


def test_invalidate_deletes_and_expires_the_cookie(client: Client) -> None:
    client.get("/inc")
    old = cookie_of(client)
    response = client.get("/logout")
    assert "Max-Age=0" in set_cookies(response)[0]
    client.set_cookie("session", old)
    assert client.get("/n").text == "0"


# -- lock modes ---------------------------------------------------------------------------

def test_none_mode_has_no_session_and_costs_nothing(client: Client, counting: CountingStore
                                                    ) -> None:
    for path in ("/hello", "/n", "/static/x"):
        assert not set_cookies(client.get(path))
    assert client.get("/static/x").text == "no session"
    assert counting.total() == 0


def test_read_mode_is_a_read_only_snapshot(client: Client) -> None:
    client.get("/inc")
    assert client.get("/snapshot/mutate").text.startswith("refused: ")
    assert client.get("/n").text == "1"


def test_mode_rules_see_the_method(make: Factory) -> None:
    client = Client(make(lock_mode=[Rule("none", methods=["POST"])]))
    assert client.post("/static/x").text == "no session"
    assert client.get("/static/x").text == "session"


# -- concurrency, through a real threaded server ----------------------------------------

def new_session(http: httpx.Client) -> str:
    cookie = session_cookie(http.get("/inc?delay=0"))
    assert cookie
    return cookie


def test_concurrent_increments_are_all_kept(make: Factory, served: Serve) -> None:
    http = served(make())
    cookie = new_session(http)
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(
            lambda _: http.get("/inc", headers=cookie_header(cookie)), range(50)))
    assert sorted(int(r.text) for r in responses) == list(range(2, 52))
    assert http.get("/n", headers=cookie_header(cookie)).text == "51"


def test_read_mode_does_not_wait_for_the_lock(make: Factory, served: Serve, app: CounterApp
                                              ) -> None:
    http = served(make())
    cookie = new_session(http)
    holder = background(lambda: http.get("/hold", headers=cookie_header(cookie)))
    assert app.holding.wait(5)
    assert http.get("/n", headers=cookie_header(cookie), timeout=2).text == "1"
    app.release.set()
    assert holder.result(10).text == "released"
    assert http.get("/n", headers=cookie_header(cookie)).text == "1001"


def test_lock_timeout_gives_503_with_retry_after(make: Factory, served: Serve, app: CounterApp
                                                 ) -> None:
    http = served(make(lock_timeout=0.3))
    cookie = new_session(http)
    holder = background(lambda: http.get("/hold", headers=cookie_header(cookie)))
    assert app.holding.wait(5)
    response = http.get("/inc", headers=cookie_header(cookie))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    app.release.set()
    assert holder.result(10).text == "released"


def test_a_long_request_keeps_its_lock_by_renewing_the_lease(
    tmp_path: Path, make: Factory, served: Serve, app: CounterApp
) -> None:
    """No request drives the process loop while the app runs: the tender must
    renew. The contender is another store on the same file, on its own loop,
    as another process would be (a contender in this process would drive the
    loop itself, and so renew the lease on its way in)."""
    lease, path = 0.3, tmp_path / "renewed.db"
    http = served(make(store=SQLiteStore(path), lease_ttl=lease))
    cookie = new_session(http)
    holder = background(lambda: http.get("/hold", headers=cookie_header(cookie)))
    assert app.holding.wait(5)
    time.sleep(4 * lease)  # without renewal the lease would have lapsed
    assert isinstance(asyncio.run(_try_lock(path, cookie, lease)), Locked)
    app.release.set()
    assert holder.result(10).status_code == 200
    assert http.get("/n", headers=cookie_header(cookie)).text == "1001"


async def _try_lock(path: Path, cookie: str, lease_ttl: float) -> Lease | Locked | None:
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    store = SQLiteStore(path)
    await store.setup()
    try:
        return await store.acquire(store_key(session_id), lease_ttl=lease_ttl)
    finally:
        await store.aclose()


def test_early_commit_frees_the_lock_during_a_streamed_response(
    make: Factory, served: Serve, app: CounterApp
) -> None:
    http = served(make())
    cookie = new_session(http)

    def stream() -> httpx.Response:
        with http.stream("GET", "/early", headers=cookie_header(cookie)) as response:
            response.read()
            return response

    streaming = background(stream)
    assert app.holding.wait(5)
    assert http.get("/inc", headers=cookie_header(cookie), timeout=2).text == "3"
    app.release.set()
    assert streaming.result(10).text == "committed;done"


def test_commit_session_needs_a_session() -> None:
    with pytest.raises(SessionClosed):
        commit_session({})


# -- threads and connections -----------------------------------------------------

def test_a_thread_per_request_leaves_no_sqlite_connection_behind(
    tmp_path: Path, app: CounterApp
) -> None:
    """Werkzeug's development server starts a thread per request: each
    thread's own SQLite connection must close when the thread ends."""
    path = tmp_path / "sessions.db"
    middleware = WSGISessionMiddleware(app, store=SQLiteStore(path), secret_key=SECRET,
                                       lock_mode=MODES)
    try:
        client = Client(middleware)
        assert client.get("/inc?delay=0").text == "1"

        def one_request() -> None:
            assert client.get("/inc?delay=0").status_code == 200

        for _ in range(20):
            thread = threading.Thread(target=one_request)
            thread.start()
            thread.join()
        assert client.get("/n").text == "21"
        assert _open_files(path) <= 3 * 2  # a few connections, each the database and its WAL
    finally:
        middleware.close()


def _open_files(database: Path) -> int:
    """How many of this process's file descriptors are open on ``database``'s files."""
    names = {str(database), f"{database}-wal"}
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _target(fd) in names)


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return ""
