"""The middlewares on SQLiteStore, on both faces: the shared suite, then a
database another process holds locked, and what a thread per request leaves
behind."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sessionware.cookies import CookieSigner, new_session_id
from sessionware.stores import SQLiteStore, Store
from tests.support.apps.counter import SECRET
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite


class TestMiddlewareOnSQLite(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "sessions.db")


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


@pytest.mark.parametrize("busy_timeout", [
    pytest.param(0.1, id="store-refuses"),
    pytest.param(30.0, id="store-too-slow"),
])
async def test_a_database_locked_elsewhere_gives_503_then_recovers_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, face: str, busy_timeout: float
) -> None:
    """The write waits for the other writer within ``store_timeout``, then 503;
    nothing is half-written. WAL readers pass a writer, so read mode serves
    the snapshot meanwhile, on both faces: the async face reads on the loop's
    thread, not behind the worker thread stuck in the write's busy wait. The
    sync face waits on the request's own thread, no longer than ``store_timeout``."""
    path = tmp_path / "sessions.db"
    async with serving(SQLiteStore(path, busy_timeout=busy_timeout), face,
                       store_timeout=0.5) as app, app.client() as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        with caplog.at_level(logging.WARNING, logger="sessionware"), database_locked(path):
            started = time.monotonic()
            response = await client.get("/inc", headers=cookie_header(cookie))
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert time.monotonic() - started < 5  # within store_timeout, not busy_timeout
            snapshot = await client.get("/n", headers=cookie_header(cookie))
            assert snapshot.status_code == 200
        failures = [r for r in caplog.records if r.name == "sessionware"]
        assert len(failures) == 1
        assert "StoreUnavailable" in failures[0].getMessage()
        # a timed-out acquire may still take the lease once the lock is free; it
        # lapses within lease_ttl, and the next request waits that out
        response = await client.get("/inc?delay=0", headers=cookie_header(cookie), timeout=30)
        if response.status_code == 503:
            pytest.fail(response.text)
        assert response.text == "2"


async def test_a_database_locked_elsewhere_is_waited_for(tmp_path: Path, face: str) -> None:
    """Within ``busy_timeout`` and ``store_timeout`` the request waits for the
    other writer, and then succeeds."""
    path = tmp_path / "sessions.db"
    async with serving(SQLiteStore(path, busy_timeout=30), face) as app, \
            app.client() as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        with database_locked(path) as unlock:
            # the other writer ends while the request waits for it, whenever that is
            threading.Timer(0.3, unlock).start()
            started = time.monotonic()
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert response.text == "2"
            assert time.monotonic() - started >= 0.25  # it did wait


async def test_a_database_that_cannot_be_opened_gives_503(tmp_path: Path, face: str) -> None:
    store = SQLiteStore(tmp_path / "missing-directory" / "sessions.db")
    async with serving(store, face) as app, app.client() as client:
        response = await client.get("/inc")  # fails at the commit: creating the session
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert not response.headers.get_list("set-cookie")
        cookie = CookieSigner(SECRET).sign(new_session_id())
        response = await client.get("/inc", headers=cookie_header(cookie))
        assert response.status_code == 503  # fails at the open: loading it


async def test_a_thread_per_request_leaves_no_connection_behind(
    tmp_path: Path, face: str
) -> None:
    """On the sync face every request here runs on a new thread (as under
    ``flask run``), which opens a connection of its own: it must close when
    the thread ends. The async face has one connection, on its worker."""
    path = tmp_path / "sessions.db"
    async with serving(SQLiteStore(path), face) as app, app.client() as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        for _ in range(20):
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert response.status_code == 200
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "21"
        # a few connections (a request thread may still be ending), each the
        # database and its WAL: not one per request
        assert open_files(path) <= 3 * 2


def open_files(database: Path, pid: int | str = "self") -> int:
    """How many of a process's file descriptors are open on ``database``'s files."""
    names = {str(database), f"{database}-wal"}
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if _target(fd) in names)


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return ""
