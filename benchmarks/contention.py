"""Lock handoff latency, measured at the store + core level.

A holder takes a session's lease; a waiter asks for it, finds it locked and
waits the way sessionware waits (``Store.wait``: pub/sub on Redis, NOTIFY on
PostgreSQL, in-process events or backoff polling on SQLite); the holder
commits; the waiter gets the lease. Handoff = waiter holds the lease -
holder starts its commit (so it includes the commit's own round trip);
``after_commit`` = waiter holds the lease - the holder's commit returned.

* ``local``: holder and waiter in one process and event loop, through
  :meth:`SessionCore.lock` (the per-process queue hands the turn over).
* ``cross``: the waiter is another process (``python -m benchmarks.contention
  waiter SPEC``), as with two server workers. Both read ``time.perf_counter``,
  which is CLOCK_MONOTONIC on Linux, so the two clocks are the same clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from sessionware._async.core import SessionCore
from sessionware._async.stores.base import Lease, Locked, Store
from sessionware.cookies import store_key


def make_store(spec: str) -> Store:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from sessionware.stores import SQLiteStore

        return SQLiteStore(where)
    if kind == "postgres":
        from sessionware.stores import PostgresStore

        return PostgresStore(where)
    from sessionware.stores import RedisStore

    return RedisStore(where)


async def _new_session(store: Store, name: str) -> str:
    key = store_key(name.ljust(43, "x"))
    await store.create(key, b'{"n": 0}', ttl=600)
    return key


async def _wait_for(store: Store, key: str, on_locked: Any = None) -> Lease:
    """sessionware's own waiting loop (SessionCore._acquire without the deadline)."""
    attempt = 0
    while True:
        got = await store.acquire(key, lease_ttl=5.0)
        if isinstance(got, Lease):
            return got
        assert isinstance(got, Locked), got
        if on_locked is not None and attempt == 0:
            on_locked()
        await store.wait(key, got.retry_after, attempt)
        attempt += 1


async def local_handoff(spec: str, rounds: int) -> list[tuple[float, float]]:
    store = make_store(spec)
    core = SessionCore(store, "handoff-secret-0123456789abcdef0123")
    await core.ensure_ready()
    key = await _new_session(store, f"local-{os.getpid()}-{time.time_ns()}")
    samples = []
    try:
        for _ in range(rounds):
            lease = await core.lock(key)
            assert lease is not None
            waiter = asyncio.ensure_future(core.lock(key))
            await asyncio.sleep(0.002)  # the waiter is queued
            t0 = time.perf_counter()
            await store.commit(lease, b'{"n": 1}', ttl=600)
            t_commit = time.perf_counter()
            core.queues.leave(key)  # what SessionTransaction does after its commit
            got = await waiter
            t1 = time.perf_counter()
            samples.append((t1 - t0, t1 - t_commit))
            assert got is not None
            await store.release(got)
            core.queues.leave(key)
    finally:
        await store.aclose()
    return samples


async def cross_handoff(spec: str, rounds: int) -> list[tuple[float, float]]:
    store = make_store(spec)
    await store.setup()
    key = await _new_session(store, f"cross-{os.getpid()}-{time.time_ns()}")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.contention", "waiter", spec, key,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None
    assert child.stdout is not None
    samples = []
    try:
        assert (await child.stdout.readline()).strip() == b"ready"
        for _ in range(rounds):
            lease = await store.acquire(key, lease_ttl=5.0)
            assert isinstance(lease, Lease), lease
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            assert (await child.stdout.readline()).strip() == b"locked"
            await asyncio.sleep(0.003)  # the waiter sits in Store.wait
            t0 = time.perf_counter()
            await store.commit(lease, b'{"n": 1}', ttl=600)
            t_commit = time.perf_counter()
            t1 = float((await child.stdout.readline()).decode())
            samples.append((t1 - t0, t1 - t_commit))
    finally:
        child.stdin.close()
        await child.wait()
        await store.aclose()
    return samples


async def _waiter(spec: str, key: str) -> None:
    store = make_store(spec)
    await store.setup()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    say("ready")
    while (await reader.readline()).strip() == b"go":
        lease = await _wait_for(store, key, on_locked=lambda: say("locked"))
        t1 = time.perf_counter()
        await store.release(lease)  # free again before the holder's next round
        say(repr(t1))
    await store.aclose()


def measure(spec: str, rounds: int) -> dict[str, Any]:
    """Both handoffs for one store; seconds."""
    return {"local": asyncio.run(local_handoff(spec, rounds)),
            "cross": asyncio.run(cross_handoff(spec, rounds))}


if __name__ == "__main__":
    if sys.argv[1] == "waiter":
        asyncio.run(_waiter(sys.argv[2], sys.argv[3]))
    else:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)))
