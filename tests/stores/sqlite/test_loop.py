"""SQLiteStore's async face runs what needs no wait on the event loop's thread.

An operation that finds SQLite's write lock free never goes to the worker
thread (two hand-offs that cost several times the database work); one that
finds it held goes there and waits. The loop's connection never checkpoints
(that flushes to disk): the worker does, every so many writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from sessionware._async.io.sqlite_runner import CHECKPOINT_EVERY
from sessionware.stores import Lease, SQLiteStore
from tests.support.store_contract import background_purge_done


async def test_operations_that_need_no_wait_do_not_need_the_worker_thread(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.setup()  # starts the first sweep: let it finish
    await background_purge_done(store)
    executor = store._runner.worker()
    worker_free = threading.Event()
    blocked = executor.submit(worker_free.wait, 30)  # the worker is busy from now on
    try:
        async with asyncio.timeout(10):
            assert await store.create("k", b"1", ttl=60)
            lease = await store.acquire("k", lease_ttl=5)
            assert isinstance(lease, Lease)
            await store.commit(lease, b"2", ttl=60)
            assert await store.read("k") == b"2"
        assert not blocked.done()
    finally:
        worker_free.set()
        await store.aclose()


async def test_a_write_that_finds_the_lock_held_waits_on_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, busy_timeout=30)
    await store.setup()
    assert await store.create("k", b"1", ttl=60)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    try:
        create = asyncio.create_task(store.create("k2", b"x", ttl=60))
        # The loop is free while the write waits: a read runs meanwhile.
        assert await store.read("k") == b"1"
        assert not create.done()
        other.execute("ROLLBACK")
        assert await asyncio.wait_for(create, 10) is True
    finally:
        other.close()
        await store.aclose()


async def test_the_worker_checkpoints_for_the_loop_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.setup()
    page = b"x" * 4000  # about a page a write
    writes = 10 * CHECKPOINT_EVERY
    for i in range(writes):
        assert await store.create(f"k{i}", page, ttl=60)
    await asyncio.get_running_loop().run_in_executor(store._runner.worker(), lambda: None)
    wal = path.with_name(path.name + "-wal").stat().st_size
    # Unchecked, the WAL holds every write, about 20 KB each here (the row, the
    # key and expiry indexes): 40 MB. Checkpointed, it is written over again
    # from the start after each checkpoint: a few checkpoints' worth at most.
    assert wal < 4 * CHECKPOINT_EVERY * 20_000, wal
    await store.aclose()
