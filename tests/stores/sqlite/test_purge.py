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

import sessionware._async.stores.sqlite as sqlite_module
import sessionware._sync.stores.sqlite as sync_sqlite_module
from sessionware.stores import SQLiteStore, Store, SyncSQLiteStore
from tests.support.expired_reports import Reports, watch
from tests.support.faces import ThreadedStore, on_face
from tests.support.store_contract import LONG, MARGIN, SHORT, background_purge_done, new_key

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
    """Once the sweeps started so far are over (the store's own, or its
    twin's behind the sync face): the async face's task, which queues its
    batches on the worker thread, and what the worker thread has queued.
    Operations run on the loop's or the caller's thread, so they do not
    queue behind them."""
    inner = store.inner if isinstance(store, ThreadedStore) else store
    assert isinstance(inner, (SQLiteStore, SyncSQLiteStore))
    await background_purge_done(store)
    executor = inner._runner.worker()
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


# -- reporting expiries (watch_expired) ----------------------------------------------


def insert_expired(db_path: str, data: dict[str, bytes]) -> None:
    """A row for each key of ``data``, past its idle deadline, in this order
    (the order a sweep deletes them in)."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.executemany(
            f"INSERT INTO {TABLE} (key, data, token, locked_until, expires_at,"
            " absolute_expires_at) VALUES (?, ?, 1, NULL, ?, NULL)",
            ((key, value, now - 60 + n * 1e-3) for n, (key, value) in enumerate(data.items())))


@pytest.fixture(params=["returning", "before 3.35"])
def returning(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sweeps that report by DELETE ... RETURNING, and as SQLite before 3.35
    (no RETURNING) does."""
    if request.param == "before 3.35":
        monkeypatch.setattr(sqlite_module, "_RETURNING", False)
        monkeypatch.setattr(sync_sqlite_module, "_RETURNING", False)
    return str(request.param)


async def test_an_expired_session_is_reported_once_by_the_background_sweep(
    db_path: str, face: str, returning: str
) -> None:
    key = new_key()
    async with on_face(SQLiteStore(db_path, sweep_interval=0.05), face) as store:
        await sweeps_done(store)
        reports = Reports()
        await watch(store, reports)
        insert_expired(db_path, {key: b"v0"})
        await reports.heard(1, traffic=lambda: store.read(new_key()))  # a due sweep starts
        assert rows(db_path) == 0
        assert await store.purge_expired() == 0
        await sweeps_done(store)
        assert reports.keys == [key]
    if face == "async":
        assert reports.on_loop == [True]  # awaited on the loop, not the worker thread
        assert reports.threads == [reports.loop_thread]
    else:
        assert reports.threads[0].startswith("sessionware-sqlite")  # the thread that swept


async def test_purge_expired_reports_sessions_and_no_bookkeeping_record(
    db_path: str, face: str, returning: str, traced_statements: list[tuple[str, str]]
) -> None:
    """Data beginning with a NUL byte is the core's (a tombstone, a user
    index): removed, counted, never reported. Empty data is a session's."""
    session, empty = new_key(), new_key()
    async with on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as store:
        await sweeps_done(store)
        reports = Reports()
        await watch(store, reports)
        insert_expired(db_path, {new_key(): b"\x00tombstone", session: b"v0",
                                 new_key(): b"\x00", empty: b""})
        assert await store.purge_expired() == 4
        assert sorted(reports.keys) == sorted([session, empty])  # by the time it returns
    if face == "async":
        assert reports.on_loop == [True, True]
    else:
        assert all(thread.startswith("sync-face") for thread in reports.threads)  # the caller's
    deletes = [sql for _, sql in traced_statements if sql.lstrip().startswith("DELETE")]
    assert any("RETURNING" in sql for sql in deletes) == (returning == "returning")


async def test_a_report_that_raises_stops_neither_the_purge_nor_the_sweeps(
    db_path: str, face: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, later = new_key(), new_key(), new_key()
    async with on_face(SQLiteStore(db_path, sweep_interval=0.05), face) as store:
        await sweeps_done(store)
        reports = Reports(failing=1)
        await watch(store, reports)
        insert_expired(db_path, {first: b"v0", second: b"v0"})
        await reports.heard(2, traffic=lambda: store.read(new_key()))  # one sweep's
        insert_expired(db_path, {later: b"v0"})
        await reports.heard(3, traffic=lambda: store.read(new_key()))  # the next sweep's
        assert sorted(reports.keys[:2]) == sorted([first, second])  # one batch, any order
        assert reports.keys[2:] == [later]
    assert "the report of expired session" in caplog.text


async def test_a_store_that_does_not_watch_purges_as_before(
    db_path: str, face: str, traced_statements: list[tuple[str, str]]
) -> None:
    async with on_face(SQLiteStore(db_path, sweep_interval=0.05), face) as store:
        await sweeps_done(store)
        insert_expired(db_path, {new_key(): b"v0"})
        assert await store.purge_expired() == 1
        insert_expired(db_path, {new_key(): b"v0"})
        await asyncio.sleep(0.1)  # past the sweep interval: the next operation sweeps
        assert await store.read(new_key()) is None
        await wait_for_rows(db_path, 0)
    sweeps = [sql for _, sql in traced_statements if sql.lstrip().startswith("DELETE")]
    assert len(sweeps) >= 2  # purge_expired's and the background sweep's
    unwatched = sqlite_module.SWEEP.format(table=TABLE).partition(":now")[0]
    assert all(sql.startswith(unwatched) and "RETURNING" not in sql for sql in sweeps), sweeps


async def test_stores_purging_one_file_at_once_report_each_session_once(
    db_path: str, face: str
) -> None:
    """Two stores, two connections, as two processes would have (the
    processes themselves: tests/stores/sqlite/test_processes.py)."""
    keys = [f"expired-{n:05d}" for n in range(BACKLOG)]
    async with on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as one, \
            on_face(SQLiteStore(db_path, sweep_interval=LONG), face) as other:
        await sweeps_done(one)
        await sweeps_done(other)
        reports = Reports()  # both stores' (the threads tell which)
        await watch(one, reports)
        await watch(other, reports)
        insert_expired(db_path, dict.fromkeys(keys, b"v0"))
        # The background sweeps the purges start remove some rows too.
        counts = await asyncio.gather(one.purge_expired(), other.purge_expired())
        await reports.heard(BACKLOG)
        assert sorted(reports.keys) == keys
        assert sum(counts) <= BACKLOG
    assert rows(db_path) == 0
    assert sorted(reports.keys) == keys  # and none came late
