"""SQLiteStore removes expired rows: on request (``purge_expired``) and in the
background, whatever the traffic, never on a request thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sessionware._loop

import sessionware.stores.sqlite as sqlite_module
from sessionware.stores import SQLiteStore
from tests.contract.store_contract import LONG, MARGIN, SHORT, new_key

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


async def wait_for_rows(db_path: str, expected: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while (count := rows(db_path)) != expected:
        assert time.monotonic() < deadline, f"{count} rows left, {expected} expected"
        await asyncio.sleep(0.02)


async def test_purge_expired_removes_a_large_backlog(db_path: str) -> None:
    async with SQLiteStore(db_path, sweep_interval=LONG) as store:
        # Queued behind the sweep that setup may have started: the table is
        # quiet from here on, so the count below is exact.
        assert await store.purge_expired() == 0
        live = new_key()
        insert_rows(db_path, live=(live,))
        assert await store.purge_expired() == BACKLOG
        assert rows(db_path) == 1
        assert await store.read(live) == b"v0"


async def test_purges_of_several_stores_at_once_count_each_row_once(db_path: str) -> None:
    # Two stores on one file: two connections, as two processes would have.
    async with SQLiteStore(db_path, sweep_interval=LONG) as one, \
            SQLiteStore(db_path, sweep_interval=LONG) as other:
        assert await one.purge_expired() == 0
        assert await other.purge_expired() == 0
        insert_rows(db_path)
        counts = await asyncio.gather(one.purge_expired(), other.purge_expired())
        assert sum(counts) == BACKLOG
        assert rows(db_path) == 0


async def test_expired_rows_go_without_any_create(db_path: str) -> None:
    live = new_key()
    async with SQLiteStore(db_path, sweep_interval=0.05) as store:
        # Queued behind setup's own sweep: that one is over before the rows
        # exist, so from here on only traffic can start a sweep.
        assert await store.purge_expired() == 0
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


async def test_the_sweep_never_runs_inline_on_a_request_thread(
    db_path: str, monkeypatch: pytest.MonkeyPatch, traced_statements: list[tuple[str, str]]
) -> None:
    # As under the WSGI driver: operations run inline on the calling thread.
    monkeypatch.setattr(sessionware._loop, "may_block", lambda: True)
    expired = [new_key() for _ in range(3)]
    async with SQLiteStore(db_path, sweep_interval=0.0) as store:
        for key in expired:
            assert await store.create(key, b"v0", ttl=SHORT)
        await asyncio.sleep(SHORT + MARGIN)
        live = new_key()
        assert await store.create(live, b"v0", ttl=LONG)
        assert await store.read(live) == b"v0"
        await wait_for_rows(db_path, 1)
    sweeps = [thread for thread, sql in traced_statements
              if sql.lstrip().startswith("DELETE") and "expires_at <=" in sql]
    assert sweeps
    assert all(thread.startswith("sessionware-sqlite") for thread in sweeps), sweeps
