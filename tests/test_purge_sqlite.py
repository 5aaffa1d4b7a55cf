"""SQLiteStore removes expired rows: on request (``purge_expired``) and in the
background, whatever the traffic, never on a request thread; on both faces."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sessionware.stores.sqlite as sqlite_module
from sessionware.stores import SQLiteStore, Store, SyncSQLiteStore
from tests.contract.store_contract import LONG, MARGIN, SHORT, new_key
from tests.faces import ThreadedStore, on_face

BACKLOG = 10_000
DEADLINE = 15.0  # bound on a wait for the background sweep: generous, never hoped for
TABLE = sqlite_module.DEFAULT_TABLE


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "sessions.db")


def rows(db_path: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        (count,) = db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    return int(count)


def insert_rows(db_path: str, expired: int = BACKLOG, live: tuple[str, ...] = ()) -> None:
    """Rows as the store writes them, in one transaction: ``expired`` of them
    a minute past their idle deadline, and the ``live`` keys a minute short."""
    now = time.time()
    rows = [(f"expired-{i:05d}", now - 60 - i * 1e-3) for i in range(expired)]
    rows += [(key, now + 60) for key in live]
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.executemany(
            f"INSERT INTO {TABLE} (key, data, token, locked_until, expires_at,"
            " absolute_expires_at) VALUES (?, ?, ?, NULL, ?, NULL)",
            ((key, b"v0", n + 1, expires) for n, (key, expires) in enumerate(rows)))


async def sweeps_done(store: Store) -> None:
    """Once the sweeps queued so far on the store's worker thread are over
    (the store's own, or its twin's behind the sync face). Operations run on
    the loop's or the caller's thread, so they do not queue behind them."""
    inner = store.inner if isinstance(store, ThreadedStore) else store
    assert isinstance(inner, (SQLiteStore, SyncSQLiteStore))
    executor = inner._current_executor()
    await asyncio.get_running_loop().run_in_executor(executor, lambda: None)


async def wait_for_rows(db_path: str, expected: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while (count := rows(db_path)) != expected:
        assert time.monotonic() < deadline, f"{count} rows left, {expected} expected"
        await asyncio.sleep(0.02)


async def test_purge_expired_removes_a_large_backlog(db_path: str, face: str) -> None:
    async with on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as store:
        # Once setup's own sweep is over the table is quiet, so the count
        # below is exact.
        await sweeps_done(store)
        assert await store.purge_expired() == 0
        live = new_key()
        insert_rows(db_path, live=(live,))
        assert await store.purge_expired() == BACKLOG
        assert rows(db_path) == 1
        assert await store.read(live) == b"v0"


async def test_purges_of_several_stores_at_once_count_each_row_once(
    db_path: str, face: str
) -> None:
    # Two stores on one file: two connections, as two processes would have
    # (on the sync face, each purges on a thread of its own).
    async with on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as one, \
            on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as other:
        await sweeps_done(one)
        await sweeps_done(other)
        insert_rows(db_path)
        counts = await asyncio.gather(one.purge_expired(), other.purge_expired())
        assert sum(counts) == BACKLOG
        assert rows(db_path) == 0


async def test_expired_rows_go_without_any_create(db_path: str, face: str) -> None:
    live = new_key()
    async with on_face(SQLiteStore(db_path, sweep_interval=0.05), face) as store:
        # Setup's own sweep is over before the rows exist, so from here on
        # only traffic can start a sweep.
        await sweeps_done(store)
        insert_rows(db_path, live=(live,))
        await asyncio.sleep(0.1)  # past the sweep interval: a sweep is due
        # Traffic on other keys only, once: the backlog then drains by itself.
        assert await store.acquire(new_key(), lease_ttl=LONG) is None
        assert await store.read(live) == b"v0"
        await wait_for_rows(db_path, 1)


@pytest.fixture
def traced_statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(thread name, SQL) of every statement the store's connections run."""
    seen: list[tuple[str, str]] = []
    connect: Callable[..., sqlite3.Connection] = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(lambda sql: seen.append((threading.current_thread().name, sql)))
        return db

    monkeypatch.setattr(sqlite_module.sqlite3, "connect", traced)
    return seen


def test_the_sweep_never_runs_on_a_request_thread(
    db_path: str, traced_statements: list[tuple[str, str]]
) -> None:
    """The sync face runs every operation on the calling thread (a WSGI
    request thread); the sweep it starts runs on the store's worker thread."""
    request_thread = threading.current_thread().name
    expired = [new_key() for _ in range(3)]
    with SyncSQLiteStore(db_path, sweep_interval=0.0) as store:
        for key in expired:
            assert store.create(key, b"v0", ttl=SHORT)
        time.sleep(SHORT + MARGIN)  # past the deadline of every row above
        live = new_key()
        assert store.create(live, b"v0", ttl=LONG)
        assert store.read(live) == b"v0"
        asyncio.run(wait_for_rows(db_path, 1))
    sweeps = [thread for thread, sql in traced_statements
              if sql.lstrip().startswith("DELETE") and "expires_at <=" in sql]
    creates = [thread for thread, sql in traced_statements if sql.lstrip().startswith("INSERT")]
    assert sweeps
    assert all(thread.startswith("sessionware-sqlite") for thread in sweeps), sweeps
    assert set(creates) == {request_thread}  # the operations did run on the calling thread


# Closing the sync face while its worker thread sweeps: the sweep waits for
# another connection's write lock (busy_timeout), and close() is called then.
# Run in a child process: the failure this guards against is a crash.
_CLOSE_DURING_SWEEP = """
import sqlite3, sys, threading
from sessionware.stores import SyncSQLiteStore

path = sys.argv[1]
with SyncSQLiteStore(path, sweep_interval=3600):
    pass  # the table exists: the next store's operations need no setup

sweeping = threading.Event()
connect = sqlite3.connect

def traced(*args, **kwargs):
    db = connect(*args, **kwargs)
    def trace(sql):
        if sql.startswith("BEGIN") and threading.current_thread().name.startswith(
                "sessionware-sqlite"):
            sweeping.set()
    db.set_trace_callback(trace)
    return db

sqlite3.connect = traced
other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
other.execute("BEGIN IMMEDIATE")  # another process's write, as it were
store = SyncSQLiteStore(path, busy_timeout=2.0)
assert store.read("k" * 64) is None  # the first operation starts a sweep
assert sweeping.wait(10), "no sweep started"  # it now waits for the write lock
threading.Timer(0.3, other.rollback).start()  # the other writer ends, whenever
store.close()
print("closed", flush=True)
"""


def test_closing_the_sync_face_while_it_sweeps_does_not_crash(db_path: str) -> None:
    result = subprocess.run([sys.executable, "-c", _CLOSE_DURING_SWEEP, db_path],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "Fatal Python error" not in result.stderr, result.stderr[-2000:]
    assert (result.returncode, result.stdout) == (0, "closed\n"), result.stderr[-2000:]
