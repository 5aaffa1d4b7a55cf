"""SQLiteStore across real OS processes on one file (on both faces where the
face matters), and what is SQLite's own. Forks are tests/test_forks.py's.

Child processes start with the "spawn" method (no inherited threads or
connections) and report through multiprocessing queues and barriers: the tests
wait on those signals, and sleep only past a deadline they know.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionware import ConfigurationError, LeaseLost, StoreError, StoreUnavailable
from sessionware.stores import Lease, Locked, SQLiteStore, Store, SyncSQLiteStore
from tests.support.store_contract import (
    LONG,
    MARGIN,
    SHORT,
    acquire_lease,
    acquire_waiting,
    background_purge_done,
    new_key,
)

SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 60.0
_T = TypeVar("_T")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "sessions.db")


@pytest.fixture
def processes() -> Iterator[list[BaseProcess]]:
    """Started children; any still alive when the test ends are killed."""
    started: list[BaseProcess] = []
    yield started
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(JOIN_TIMEOUT)


def spawn(started: list[BaseProcess], target: Callable[..., None], *args: Any) -> BaseProcess:
    process = SPAWN.Process(target=target, args=args, daemon=True)
    process.start()
    started.append(process)
    return process


def with_store(path: str, op: Callable[[Store], Awaitable[_T]], **options: Any) -> _T:
    """Run one operation on a fresh store, on a fresh event loop."""

    async def run() -> _T:
        async with SQLiteStore(path, **options) as store:
            return await op(store)

    return asyncio.run(run())


def raw(path: str, sql: str) -> list[Any]:
    """A query by a plain sqlite3 connection, to look under the store."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


TABLE = "sessionware_sessions"


# -- children (top level, so that "spawn" can import them) ----------------------


def increment_in_process(path: str, key: str, rounds: int, start: Barrier, face: str) -> None:
    start.wait(JOIN_TIMEOUT)
    if face == "sync":
        _increment_sync(path, key, rounds)
    else:
        asyncio.run(_increment(path, key, rounds))


def _increment_sync(path: str, key: str, rounds: int) -> None:
    with SyncSQLiteStore(path) as store:
        for _ in range(rounds):
            deadline = time.monotonic() + LONG
            attempt = 0
            while not isinstance(lease := store.acquire(key, lease_ttl=LONG), Lease):
                assert isinstance(lease, Locked) and time.monotonic() < deadline
                store.wait(key, min(lease.retry_after, deadline - time.monotonic()), attempt)
                attempt += 1
            store.commit(lease, str(int(lease.data) + 1).encode(), ttl=LONG)


async def _increment(path: str, key: str, rounds: int) -> None:
    async with SQLiteStore(path) as store:
        for _ in range(rounds):
            lease = await acquire_waiting(store, key, timeout=LONG)
            await store.commit(lease, str(int(lease.data) + 1).encode(), ttl=LONG)


def hold_until_killed(path: str, key: str, lease_ttl: float, report: Queue[Any]) -> None:
    asyncio.run(_hold(path, key, lease_ttl, report))


async def _hold(path: str, key: str, lease_ttl: float, report: Queue[Any]) -> None:
    store = SQLiteStore(path)  # never closed: this process ends by SIGKILL
    started = time.time()
    lease = await acquire_lease(store, key, lease_ttl=lease_ttl)
    report.put((lease.token, started))
    await asyncio.Event().wait()


def write_until_killed(path: str, key: str, report: Queue[Any]) -> None:
    """Hold SQLite's write lock with a change that is never committed."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE sessionware_sessions SET data = ? WHERE key = ?", (b"dirty", key))
    report.put("writing")
    threading.Event().wait()


def setup_in_process(path: str, start: Barrier) -> None:
    start.wait(JOIN_TIMEOUT)
    asyncio.run(SQLiteStore(path).__aenter__())


def purge_watching(path: str, face: str, ready: Barrier, go: Barrier, out: Queue[Any]) -> None:
    """Watch expiries, wait for the rows, purge them with the others; put
    the keys reported here."""
    keys: list[str] = []
    if face == "sync":
        with SyncSQLiteStore(path, sweep_interval=LONG) as store:
            # setup's own sweep, which does not report, is over before the rows exist
            store._runner.worker().submit(lambda: None).result()
            assert store.watch_expired(keys.append)
            ready.wait(JOIN_TIMEOUT)
            go.wait(JOIN_TIMEOUT)
            store.purge_expired()
    else:
        asyncio.run(_purge_watching(path, keys, ready, go))
    out.put(keys)


async def _purge_watching(path: str, keys: list[str], ready: Barrier, go: Barrier) -> None:
    async def report(key: str) -> None:
        keys.append(key)

    async with SQLiteStore(path, sweep_interval=LONG) as store:
        await background_purge_done(store)  # setup's own sweep, which does not report
        assert await store.watch_expired(report)
        ready.wait(JOIN_TIMEOUT)
        go.wait(JOIN_TIMEOUT)
        await store.purge_expired()


def join_all(started: list[BaseProcess]) -> None:
    for process in started:
        process.join(JOIN_TIMEOUT)
        assert process.exitcode == 0, f"{process.name} ended with {process.exitcode}"


# -- across processes -------------------------------------------------------------


def test_increments_from_four_processes_add_up(
    db_path: str, processes: list[BaseProcess], face: str
) -> None:
    key, workers, rounds = new_key(), 4, 25
    assert with_store(db_path, lambda s: s.create(key, b"0", ttl=LONG))
    start = SPAWN.Barrier(workers)
    for _ in range(workers):
        spawn(processes, increment_in_process, db_path, key, rounds, start, face)
    join_all(processes)
    assert with_store(db_path, lambda s: s.read(key)) == b"100"


def test_killed_holder_is_reclaimed_once_its_lease_lapses(
    db_path: str, processes: list[BaseProcess]
) -> None:
    key, lease_ttl = new_key(), 1.0
    assert with_store(db_path, lambda s: s.create(key, b"v0", ttl=LONG))
    report: Queue[Any] = SPAWN.Queue()
    holder = spawn(processes, hold_until_killed, db_path, key, lease_ttl, report)
    dead_token, started = report.get(timeout=JOIN_TIMEOUT)
    holder.kill()
    holder.join(JOIN_TIMEOUT)
    assert holder.exitcode == -signal.SIGKILL
    killed = time.monotonic()

    async def take_over(store: Store) -> Lease:
        first = await store.acquire(key, lease_ttl=LONG)
        if time.time() < started + lease_ttl:  # the lease had surely not lapsed
            assert isinstance(first, Locked)
        return await acquire_waiting(store, key, timeout=lease_ttl + 5.0)

    lease = with_store(db_path, take_over)
    assert time.monotonic() - killed < lease_ttl + 3.0
    assert lease.token > dead_token
    assert lease.data == b"v0"


def test_writer_killed_inside_a_transaction_leaves_neither_change_nor_lock(
    db_path: str, processes: list[BaseProcess]
) -> None:
    key = new_key()
    assert with_store(db_path, lambda s: s.create(key, b"v0", ttl=LONG))
    report: Queue[Any] = SPAWN.Queue()
    writer = spawn(processes, write_until_killed, db_path, key, report)
    assert report.get(timeout=JOIN_TIMEOUT) == "writing"

    async def while_writing(store: Store) -> None:
        assert await store.read(key) == b"v0"  # WAL: readers pass the writer
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.create(new_key(), b"x", ttl=LONG)

    with_store(db_path, while_writing, busy_timeout=0.1)
    writer.kill()
    writer.join(JOIN_TIMEOUT)
    lease = with_store(db_path, lambda s: acquire_lease(s, key), busy_timeout=0.1)
    assert lease.data == b"v0"


def test_processes_purging_at_once_report_each_expired_session_once(
    db_path: str, processes: list[BaseProcess], face: str
) -> None:
    """Each removes rows by its own statements, which return the keys to its
    connection only: every expired session is reported by one process, once;
    the bookkeeping records by none."""
    workers, sessions = 3, 5000
    with_store(db_path, lambda s: s.purge_expired(), sweep_interval=LONG)  # the table
    ready, go, out = SPAWN.Barrier(workers + 1), SPAWN.Barrier(workers + 1), SPAWN.Queue()
    for _ in range(workers):
        spawn(processes, purge_watching, db_path, face, ready, go, out)
    ready.wait(JOIN_TIMEOUT)  # every child watches
    keys = [f"session-{n:05d}" for n in range(sessions)]
    now = time.time()
    db = sqlite3.connect(db_path)
    try:
        with db:
            db.executemany(
                f"INSERT INTO {TABLE} (key, data, token, expires_at) VALUES (?, ?, 1, ?)",
                [(key, data, now - 60 + n * 1e-4) for n, key in enumerate(keys)
                 for key, data in ((key, b"v0"), (f"tombstone-{key}", b"\x00t"))])
    finally:
        db.close()
    go.wait(JOIN_TIMEOUT)
    heard = [out.get(timeout=JOIN_TIMEOUT) for _ in range(workers)]
    join_all(processes)
    assert raw(db_path, f"SELECT count(*) FROM {TABLE}") == [(0,)]
    # (How the batches fell to the processes is up to the race: one may take all.)
    assert sorted(key for keys_heard in heard for key in keys_heard) == keys


def test_setup_from_several_processes_at_once(
    db_path: str, processes: list[BaseProcess]
) -> None:
    """Each creates the table and index if missing: none fails, and the
    table comes out as one setup makes it."""
    start = SPAWN.Barrier(4)
    for _ in range(4):
        spawn(processes, setup_in_process, db_path, start)
    join_all(processes)
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    columns = [name for (name,) in raw(db_path, f"SELECT name FROM pragma_table_info('{TABLE}')")]
    assert columns == ["key", "data", "token", "locked_until", "expires_at",
                       "absolute_expires_at", "created_at", "locked_at"]
    assert with_store(db_path, lambda s: s.create(new_key(), b"v0", ttl=LONG))


# -- SQLite specifics, in one process ---------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "'; DROP TABLE sessionware_sessions; --", "ключ\u0000nul", "%_*", "x" * 4096]
)
async def test_odd_keys_are_data_not_sql(db_path: str, key: str) -> None:
    async with SQLiteStore(db_path) as store:
        assert await store.acquire(key, lease_ttl=LONG) is None
        assert await store.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(store, key)
        await store.commit(lease, b"v1", ttl=LONG)
        assert await store.read(key) == b"v1"
        assert await store.read(key + "?") is None


@pytest.mark.parametrize("table", ["", "1st", "sessions; DROP TABLE x", "a-b", "t" * 64])
def test_table_name_is_checked(db_path: str, table: str) -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        SQLiteStore(db_path, table=table)


async def test_tables_in_one_file_are_separate(db_path: str) -> None:
    key = new_key()
    async with SQLiteStore(db_path) as one, SQLiteStore(db_path, table="other") as two:
        assert await one.create(key, b"one", ttl=LONG)
        assert await two.create(key, b"two", ttl=LONG)
        assert await one.read(key) == b"one"
        assert await two.read(key) == b"two"


async def test_missing_directory_is_unavailable_on_setup(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "sessions.db"
    store = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="unable to open") as caught:
        await store.setup()
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    await store.aclose()


async def test_a_file_that_is_no_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"not a database, " * 512)
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="not a database") as caught:
        await store.setup()
    assert not isinstance(caught.value, StoreUnavailable)
    await store.aclose()


async def test_expired_rows_are_swept(db_path: str) -> None:
    expired = [new_key() for _ in range(3)]
    async with SQLiteStore(db_path, sweep_interval=0.0) as store:
        for key in expired:
            assert await store.create(key, b"v0", ttl=SHORT)
        await asyncio.sleep(SHORT + MARGIN)
        live = new_key()
        assert await store.create(live, b"v0", ttl=LONG)
    assert raw(db_path, "SELECT key FROM sessionware_sessions") == [(live,)]


async def test_a_key_created_again_never_reuses_a_token(db_path: str) -> None:
    key = new_key()
    async with SQLiteStore(db_path, sweep_interval=LONG) as store:
        assert await store.create(key, b"v0", ttl=SHORT)
        old = await acquire_lease(store, key)
        await asyncio.sleep(SHORT + MARGIN)
        assert await store.create(key, b"new", ttl=LONG)
        with pytest.raises(LeaseLost):
            await store.commit(old, b"stale", ttl=LONG)
        assert (await acquire_lease(store, key)).token > old.token


def test_one_store_serves_event_loops_in_turn(db_path: str) -> None:
    key = new_key()
    store = SQLiteStore(db_path)
    asyncio.run(store.setup())
    assert asyncio.run(store.create(key, b"v0", ttl=LONG))
    assert asyncio.run(store.read(key)) == b"v0"
    asyncio.run(store.aclose())


async def test_use_after_close_is_a_clear_error(db_path: str) -> None:
    store = SQLiteStore(db_path)
    await store.setup()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        await store.read(new_key())
