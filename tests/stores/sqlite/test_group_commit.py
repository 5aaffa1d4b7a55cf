"""SQLiteStore commits the writes of one event loop turn together (async
face), and of the request threads that wait for one transaction (sync face).

The turn's first write runs at once, alone; the writes that the turn's other
tasks ask for share one transaction at the turn's end. On the sync face, the
writes asked for while a transaction runs share the next one. Each caller hears its
answer only after the transaction holding its write committed. A group that
meets a held write lock or an error is rolled back whole, and each of its
writes runs again alone, where an error is its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sessionware import StoreUnavailable
from sessionware.stores import Lease, Locked, SQLiteStore, SyncSQLiteStore
from tests.support.store_contract import background_purge_done

KEYS = [f"k{i}" for i in range(32)]
TOKEN = "SELECT token, locked_until IS NOT NULL FROM sessionware_sessions WHERE key = ?"


async def _store(path: Path) -> SQLiteStore:
    store = SQLiteStore(path, busy_timeout=30)
    await store.setup()
    await background_purge_done(store)  # no sweep holds the lock meanwhile
    for key in KEYS:
        assert await store.create(key, b"0", ttl=60)
    return store


def _traced(store: SQLiteStore) -> list[str]:
    """The statements the loop thread's connection runs from now on."""
    statements: list[str] = []
    store._runner.connection().set_trace_callback(statements.append)
    return statements


async def test_the_writes_of_one_turn_share_one_commit(tmp_path: Path) -> None:
    store = await _store(tmp_path / "s.db")
    try:
        statements = _traced(store)
        leases = await asyncio.gather(*(store.acquire(key, lease_ttl=5) for key in KEYS))
        assert all(isinstance(lease, Lease) for lease in leases)
        # the turn's first alone, the other 31 together
        assert statements.count("COMMIT") == 2, statements
        assert statements.count("BEGIN IMMEDIATE") == 2
        statements.clear()
        await asyncio.gather(*(store.commit(lease, b"1", ttl=60)  # type: ignore[arg-type]
                               for lease in leases))
        assert statements.count("COMMIT") == 2, statements
        assert [await store.read(key) for key in KEYS] == [b"1"] * len(KEYS)
    finally:
        await store.aclose()


async def test_each_caller_is_answered_after_its_write_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await _store(path)
    other = sqlite3.connect(path)  # another process's view: committed rows only
    try:
        async def acquire_and_look(key: str) -> bool:
            lease = await store.acquire(key, lease_ttl=5)
            assert isinstance(lease, Lease)
            committed: tuple[int, int] = other.execute(TOKEN, (key,)).fetchone()
            return committed == (lease.token, 1)

        assert all(await asyncio.gather(*(acquire_and_look(key) for key in KEYS)))
    finally:
        other.close()
        await store.aclose()


async def test_a_caller_cancelled_before_the_turn_ends_writes_nothing(tmp_path: Path) -> None:
    store = await _store(tmp_path / "s.db")
    try:
        first = asyncio.create_task(store.acquire("k0", lease_ttl=5))
        second = asyncio.create_task(store.acquire("k1", lease_ttl=5))
        await asyncio.sleep(0)  # both ran: k0's alone, k1's waits for the turn's end
        assert first.done()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert isinstance(await store.acquire("k1", lease_ttl=5), Lease)  # nobody held it
        assert isinstance(await store.acquire("k0", lease_ttl=5), Locked)  # first holds it
    finally:
        await store.aclose()


async def test_a_group_that_finds_the_lock_held_waits_on_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await _store(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    try:
        writes = [asyncio.create_task(store.acquire(key, lease_ttl=5)) for key in KEYS]
        done, _ = await asyncio.wait(writes, timeout=0.2)
        assert not done  # every one waits for the lock, none gave up
        other.execute("ROLLBACK")
        leases = await asyncio.wait_for(asyncio.gather(*writes), 10)
        assert all(isinstance(lease, Lease) for lease in leases)
    finally:
        other.close()
        await store.aclose()


async def test_an_error_in_a_group_is_its_own_writes(tmp_path: Path) -> None:
    store = await _store(tmp_path / "s.db")
    db = store._runner.connection()
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES ('taken')")

    def insert(db: sqlite3.Connection, now: float, key: str) -> str:
        db.execute("INSERT INTO t VALUES (?)", (key,))
        return key

    try:
        answers = await asyncio.gather(
            *(store._group.write(insert, key) for key in ("a", "b", "taken", "c")),
            return_exceptions=True)
        assert answers[:2] + answers[3:] == ["a", "b", "c"]
        assert isinstance(answers[2], sqlite3.IntegrityError)
        rows = db.execute("SELECT k FROM t ORDER BY k").fetchall()
        assert rows == [("a",), ("b",), ("c",), ("taken",)]
    finally:
        await store.aclose()


async def test_a_lock_held_past_busy_timeout_fails_the_group_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await _store(path)
    store._runner.busy_timeout = 0.5
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # held for good
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(store.acquire(key, lease_ttl=5) for key in KEYS),
                                       return_exceptions=True)
        assert all(isinstance(answer, StoreUnavailable) for answer in answers), answers
        # the turn's first write waited alone, then the group once: not 32 waits
        assert time.monotonic() - started < 8 * 0.5
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.aclose()


# -- the sync face: the request threads of one process ---------------------------


def _sync_store(path: Path, busy_timeout: float) -> SyncSQLiteStore:
    store = SyncSQLiteStore(path, busy_timeout=busy_timeout)
    store.setup()
    store._runner.worker().submit(lambda: None).result(10)  # the first sweep is done
    for key in KEYS[:THREADS]:
        assert store.create(key, b"0", ttl=60)
    return store


THREADS = 16


def _in_threads(store: SyncSQLiteStore,
                then: Callable[[], object]) -> tuple[list[object], float]:
    """Each of THREADS threads acquires a key of its own while another
    connection holds the write lock; once every thread but the first queued
    behind the first's transaction, ``then()``. The answers, and the seconds
    they took."""
    answers: list[object] = [None] * THREADS

    def acquire(index: int) -> None:
        try:
            answers[index] = store.acquire(KEYS[index], lease_ttl=5)
        except StoreUnavailable as exc:
            answers[index] = exc

    threads = [threading.Thread(target=acquire, args=(i,)) for i in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(store._group._queue) < THREADS - 1 and all(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "the threads did not queue"
        time.sleep(0.001)
    then()
    for thread in threads:
        thread.join(30)
    return answers, time.monotonic() - started


def test_threads_that_wait_for_a_transaction_share_the_next(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = _sync_store(path, busy_timeout=30)
    groups: list[int] = []
    together = store._runner.together

    def counted(writes: list[Any]) -> list[Any]:
        answers = together(writes)
        groups.append(len(writes))  # committed
        return answers

    store._runner.together = counted  # type: ignore[method-assign]
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the first thread's transaction waits for it
    try:
        answers, _ = _in_threads(store, lambda: other.execute("ROLLBACK"))
        assert all(isinstance(answer, Lease) for answer in answers), answers
        assert groups == [1, THREADS - 1]  # the first alone, the rest together
    finally:
        other.close()
        store.close()


def test_threads_fail_together_when_the_lock_stays_held(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = _sync_store(path, busy_timeout=0.5)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        answers, seconds = _in_threads(store, lambda: None)
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()
    assert all(isinstance(answer, StoreUnavailable) for answer in answers), answers
    assert seconds < 8 * 0.5  # the first's wait, then the group's: not one per thread
