"""WSGISessionMiddleware on RedisStore: the blocking command path.

Under WSGI a request thread drives the process loop and RedisStore sends its
commands over a blocking socket of that thread (``stores/_resp.py``). These
tests drive that path against a real valkey-server: threads at once, a stalled
server (bounded by ``store_timeout``, not the socket timeout), and a restart.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from werkzeug.test import Client

from sessionware.stores import RedisStore
from sessionware.wsgi import WSGISessionMiddleware
from tests.servers.redis import RedisServer
from tests.test_wsgi import MODES, SECRET, CounterApp

Make = Callable[..., tuple[WSGISessionMiddleware, RedisServer]]


@pytest.fixture
def make(redis_server_factory: Callable[..., RedisServer]) -> Iterator[Make]:
    made: list[WSGISessionMiddleware] = []

    def factory(*, persistent: bool = False, socket_timeout: float = 5.0,
                **options: object) -> tuple[WSGISessionMiddleware, RedisServer]:
        server = redis_server_factory(persistent=persistent)
        store = RedisStore(server.url, socket_timeout=socket_timeout)
        made.append(WSGISessionMiddleware(CounterApp(), store=store, secret_key=SECRET,
                                          lock_mode=MODES, **options))  # type: ignore[arg-type]
        return made[-1], server

    yield factory
    for middleware in made:
        middleware.close()


def test_threads_at_once_lose_no_update(make: Make) -> None:
    """Threads share the process loop: one drives, the others join and take
    over; each sends over its own blocking connection."""
    middleware, _ = make()
    first = Client(middleware)
    assert first.get("/inc?delay=0").text == "1"
    cookie = first.get_cookie("session")
    assert cookie is not None

    def increment(_: int) -> str:
        client = Client(middleware)
        client.set_cookie("session", cookie.value)
        return client.get("/inc?delay=0.001").text

    with ThreadPoolExecutor(16) as pool:
        answers = sorted(int(text) for text in pool.map(increment, range(100)))
    assert answers == list(range(2, 102))
    assert first.get("/n").text == "101"


def test_a_stalled_server_gives_503_within_store_timeout(make: Make) -> None:
    """A blocking call cannot be cancelled by the core's watchdog; it bounds its
    own wait by the store call's deadline, not by the 30 s socket timeout."""
    middleware, server = make(socket_timeout=30.0, store_timeout=0.5, lease_ttl=1.0)
    client = Client(middleware)
    assert client.get("/inc?delay=0").text == "1"
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.get("/inc?delay=0")
        assert response.status_code == 503
        assert time.monotonic() - started < 5  # store_timeout, with room for a slow machine
    finally:
        server.process.send_signal(signal.SIGCONT)
    # the stalled acquire may have taken the lease once the server woke up; it
    # lapses within lease_ttl and the next request waits that out
    assert client.get("/inc?delay=0").text == "2"


def test_a_restart_gives_503_then_recovers_intact(make: Make) -> None:
    middleware, server = make(persistent=True, socket_timeout=1.0, store_timeout=1.0)
    client = Client(middleware)
    assert client.get("/inc?delay=0").text == "1"
    server.stop()
    assert client.get("/inc?delay=0").status_code == 503
    server.start()
    # the blocking connection died with the server: the next call opens another
    assert client.get("/inc?delay=0").text == "2"
    assert client.get("/n").text == "2"


def test_a_thread_per_request_leaves_no_connection_behind(make: Make) -> None:
    """Werkzeug's development server (``flask run``) starts a thread per
    request: each thread's blocking connection must close when it ends."""
    middleware, server = make()
    client = Client(middleware)
    assert client.get("/inc?delay=0").text == "1"

    def one_request() -> None:
        assert client.get("/inc?delay=0").status_code == 200

    for _ in range(20):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join()
    assert client.get("/n").text == "21"
    with server.client() as probe:
        connections = len(probe.client_list()) - 1  # not the probe itself
    assert connections <= 3  # this thread's, the shared loop's, and slack for one
