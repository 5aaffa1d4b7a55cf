"""PostgresStore beyond the shared suites, on both faces, against the session's
real server: set-up raced by several stores, NOTIFY only when someone waits,
a waiter in another store (another process's) woken by NOTIFY and not by its
polling, purges racing each other, the expiries they report, and errors."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import sessionware._async.stores.postgres as postgres_module
from sessionware import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores import Lease, Locked, PostgresStore, SyncPostgresStore
from tests.support.expired_reports import Reports, watch
from tests.support.faces import on_face
from tests.support.servers.postgres import PostgresServer
from tests.support.store_contract import (
    LONG,
    acquire_lease,
    acquire_waiting,
    new_key,
)

SHORT = 0.2


def fresh_table() -> str:
    return f"sessions_{secrets.token_hex(6)}"


async def test_setup_raced_by_eight_stores_creates_everything_once(
    postgres_dsn: str, face: str
) -> None:
    """CREATE ... IF NOT EXISTS is not safe against itself: two sessions
    creating one table at the same moment collide in the catalog. setup()
    finds the other's table on its next try."""
    table = fresh_table()
    stores = [PostgresStore(postgres_dsn, table=table) for _ in range(8)]
    driven = [on_face(store, face) for store in stores]
    try:
        opened = await asyncio.gather(*(d.__aenter__() for d in driven))  # setup() at once
        key = new_key()
        assert await opened[0].create(key, b"v0", ttl=LONG)
        assert await opened[7].read(key) == b"v0"
    finally:
        for d in driven:
            await d.__aexit__(None, None, None)
    with psycopg.connect(postgres_dsn) as probe:
        row = probe.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s",
                            (f"{table}%",)).fetchone()
    assert row == (4,)  # the table, its primary key, the expires_at index, the sequence


async def test_setup_without_create_table_checks_the_table(postgres_dsn: str, face: str) -> None:
    with pytest.raises(StoreError, match="no table"):
        async with on_face(PostgresStore(postgres_dsn, table=fresh_table(),
                                         create_table=False), face):
            pass
    for table in (fresh_table(), "Mixed_" + fresh_table()):  # names are quoted identifiers
        async with on_face(PostgresStore(postgres_dsn, table=table), face):
            pass
        async with on_face(PostgresStore(postgres_dsn, table=table, create_table=False),
                           face) as store:
            assert await store.create(new_key(), b"v0", ttl=LONG)


def listen(dsn: str, channel: str) -> psycopg.Connection[tuple[object, ...]]:
    connection = psycopg.connect(dsn, autocommit=True)
    connection.execute(f'LISTEN "{channel}"')
    return connection


def heard(connection: psycopg.Connection[tuple[object, ...]], within: float,
          expected: int = 0) -> list[str]:
    """The payloads heard within ``within`` seconds, or until ``expected``
    came, and then whatever else comes within 0.2 s."""
    payloads = [n.payload for n in connection.notifies(timeout=within,
                                                       stop_after=expected or None)]
    if expected:
        payloads += [n.payload for n in connection.notifies(timeout=0.2)]
    return payloads


async def test_only_a_release_someone_waits_for_notifies(postgres_dsn: str, face: str) -> None:
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table), face) as store:
        with listen(postgres_dsn, table) as ear:
            key = new_key()
            assert await store.create(key, b"v0", ttl=LONG)
            for _ in range(3):  # uncontended: commit, release, renew, delete notify nothing
                lease = await acquire_lease(store, key)
                await store.renew(lease, lease_ttl=LONG)
                await store.commit(lease, b"v1", ttl=LONG)
                await store.release(await acquire_lease(store, key))
            assert heard(ear, 0.3) == []
            holder = await acquire_lease(store, key)
            assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)  # flags it
            assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
            await store.commit(holder, b"v2", ttl=LONG)
            assert heard(ear, 5.0, 1) == [key]  # once, however often the waiter looked
            taken = await acquire_lease(store, key)  # the waiter takes it: flag cleared
            await store.release(taken)
            assert heard(ear, 0.3) == []
            holder = await acquire_lease(store, key)
            assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
            await store.delete(holder)
            assert heard(ear, 5.0, 1) == [key]


async def test_a_waiter_in_another_store_is_woken_by_notify_not_by_polling(
    postgres_dsn: str, face: str
) -> None:
    """Two store instances are two processes' worth: separate pools and
    listeners. The waiter's re-check backoff is long (attempt 16: 0.5 to 1 s),
    so a wake-up within 0.4 s of the release is the NOTIFY's."""
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table), face) as holder_store, \
            on_face(PostgresStore(postgres_dsn, table=table), face) as waiter_store:
        key = new_key()
        assert await holder_store.create(key, b"v0", ttl=LONG)
        # the waiter's listener connects at its first wait
        await waiter_store.wait(key, 0.3, 0)
        for _ in range(3):
            lease = await acquire_lease(holder_store, key)
            assert isinstance(await waiter_store.acquire(key, lease_ttl=LONG), Locked)
            waiting = asyncio.create_task(waiter_store.wait(key, 5.0, 16))
            await asyncio.sleep(0.05)
            released = time.monotonic()
            await holder_store.commit(lease, b"v1", ttl=LONG)
            await asyncio.wait_for(waiting, 5.0)
            assert time.monotonic() - released < 0.4
            got = await waiter_store.acquire(key, lease_ttl=LONG)
            assert isinstance(got, Lease)
            await waiter_store.release(got)


async def test_without_the_listener_a_waiter_in_another_store_finds_the_release_by_polling(
    postgres_dsn: str, face: str
) -> None:
    """``listen=False`` (a transaction-mode PgBouncer and no ``listen_dsn``):
    the waiter re-checks with the plain polling backoff, up to 50 ms."""
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table, listen=False),
                       face) as holder_store, \
            on_face(PostgresStore(postgres_dsn, table=table, listen=False),
                    face) as waiter_store:
        key = new_key()
        assert await holder_store.create(key, b"0", ttl=LONG)
        lease = await acquire_lease(holder_store, key)
        waiter = asyncio.create_task(acquire_waiting(waiter_store, key, timeout=LONG))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        released = time.monotonic()
        await holder_store.commit(lease, b"1", ttl=LONG)
        got = await asyncio.wait_for(waiter, 5.0)
        assert got.data == b"1"
        assert time.monotonic() - released < 0.5


async def test_a_waiter_in_another_process_is_woken_by_notify(postgres_dsn: str) -> None:
    """The same across a real process boundary (the async face in a child)."""
    table = fresh_table()
    async with PostgresStore(postgres_dsn, table=table) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(store, key)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WAITER, postgres_dsn, table, key,
            stdout=subprocess.PIPE)
        assert child.stdout is not None
        try:
            assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"waiting"
            await asyncio.sleep(0.1)
            released = time.monotonic()
            await store.commit(lease, b"v1", ttl=LONG)
            line = await asyncio.wait_for(child.stdout.readline(), 10)
            woken = float(line)
            assert woken - released < 0.4, woken - released
        finally:
            await child.wait()


_WAITER = """
import asyncio, sys, time
from sessionware.stores import Locked, PostgresStore

async def main(dsn, table, key):
    async with PostgresStore(dsn, table=table) as store:
        await store.wait(key, 0.3, 0)  # connects the listener
        assert isinstance(await store.acquire(key, lease_ttl=30), Locked)
        print("waiting", flush=True)
        await store.wait(key, 5.0, 16)  # polling would sleep 0.5 to 1 s
        print(time.monotonic(), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_purges_racing_each_other_count_every_row_once(postgres_dsn: str,
                                                             face: str) -> None:
    """Four stores purge 2,000 expired rows at once (four batches each): no
    purge waits for another (SKIP LOCKED), none deadlocks, each row is counted
    by the purge that deleted it, and live rows stay."""
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table), face) as store:
        live = new_key()
        assert await store.create(live, b"v0", ttl=LONG)
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(f"""INSERT INTO "{table}" (key, data, token, expires_at)
                       SELECT 'x' || n, 'v', n, now() - interval '1 second'
                       FROM generate_series(1, 2000) AS n""")
    purgers = [PostgresStore(postgres_dsn, table=table) for _ in range(4)]
    driven = [on_face(p, face) for p in purgers]
    try:
        opened = [await d.__aenter__() for d in driven]
        counts = await asyncio.gather(*(p.purge_expired() for p in opened))
        assert sum(counts) == 2000, counts
        assert await opened[0].purge_expired() == 0
        assert await opened[0].read(live) == b"v0"
    finally:
        for d in driven:
            await d.__aexit__(None, None, None)


async def test_expired_rows_are_purged_in_the_background(postgres_dsn: str, face: str) -> None:
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table, purge_interval=0.2),
                       face) as store:
        keys = [new_key() for _ in range(3)]
        for key in keys:
            assert await store.create(key, b"v0", ttl=SHORT)
        deadline = time.monotonic() + 10
        with psycopg.connect(postgres_dsn, autocommit=True) as db:
            while True:
                await store.read(new_key())  # traffic: any operation starts a due purge
                row = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                if row == (0,):
                    break
                assert time.monotonic() < deadline, row
                await asyncio.sleep(0.1)


# -- synchronous_commit=False -----------------------------------------------------


def noting_commit_settings(dsn: str, table: str) -> Callable[[], list[str]]:
    """A trigger on ``table`` that notes, for every row any statement writes,
    the ``synchronous_commit`` in force in the writing transaction (what its
    commit obeys); returns what was noted since the last call."""
    notes = f"{table}_notes"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLE {notes} (id serial, setting text)")
        db.execute(f"""CREATE FUNCTION {notes}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO {notes} (setting)
                  VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$""")
        db.execute(f"CREATE TRIGGER {notes} AFTER INSERT OR UPDATE OR DELETE ON {table}"
                   f" FOR EACH ROW EXECUTE FUNCTION {notes}()")

    def noted() -> list[str]:
        with psycopg.connect(dsn, autocommit=True) as db:
            rows = db.execute(f"DELETE FROM {notes} RETURNING id, setting").fetchall()
        return [setting for _, setting in sorted(rows)]
    return noted


@pytest.mark.parametrize("synchronous_commit", [True, False])
@pytest.mark.parametrize("route", ["straight", "pgbouncer"])
async def test_synchronous_commit_off_reaches_every_write_but_acquire(
    postgres_dsn: str, face: str, route: str, synchronous_commit: bool,
    request: pytest.FixtureRequest
) -> None:
    """Each operation's writes, seen from inside their own transaction (a
    trigger): with synchronous_commit=False every one but acquire's commits
    with synchronous_commit off, straight (the lean path on the async face,
    the pool on the sync face) and through PgBouncer in transaction mode."""
    table = fresh_table()
    dsn, options = postgres_dsn, {}
    if route == "pgbouncer":
        dsn = request.getfixturevalue("pgbouncer_dsn")
        options = {"prepare": False, "listen_dsn": postgres_dsn}
    store = PostgresStore(dsn, table=table, synchronous_commit=synchronous_commit,
                          purge_interval=3600, **options)
    writes = "on" if synchronous_commit else "off"  # all but acquire's
    async with on_face(store, face) as store:
        noted = noting_commit_settings(postgres_dsn, table)
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        assert noted() == [writes]
        lease = await acquire_lease(store, key)
        assert noted() == ["on"]  # acquire: always flushed (it takes the token)
        await store.commit(lease, b"v1", ttl=LONG)
        assert noted() == [writes]
        await store.release(await acquire_lease(store, key), ttl=LONG)
        assert noted() == ["on", writes]
        lease = await acquire_lease(store, key)
        await store.renew(lease, lease_ttl=LONG)
        await store.release(lease)
        assert noted() == ["on", writes, writes]
        assert await store.read(key, ttl=2 * LONG) == b"v1"  # slides the expiry
        assert noted() == [writes]
        await store.delete(await acquire_lease(store, key))
        assert noted() == ["on", writes]
        assert await store.create(key, b"v2", ttl=LONG)
        assert await store.discard(key)
        assert noted() == [writes, writes]
        assert await store.create(new_key(), b"v3", ttl=SHORT)
        noted()
        await asyncio.sleep(SHORT + 0.05)
        assert await store.purge_expired() == 1
        assert noted() == [writes]


async def test_synchronous_commit_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="synchronous_commit must be True or False"):
        PostgresStore("postgresql://127.0.0.1/", synchronous_commit="off")  # type: ignore[arg-type]


async def test_lean_connections_take_the_statements_in_turn(
        postgres_server_factory: Callable[[], PostgresServer]) -> None:
    """Each of the lean path's connections runs its share of the statements:
    on a server that waits for the WAL flush, their commits wait side by side."""
    server = postgres_server_factory()  # its own: no other test's connections counted
    store = PostgresStore(server.dsn, lean_connections=3, listen=False)
    try:
        await store.setup()
        keys = [f"k{i}" for i in range(30)]
        assert all(await asyncio.gather(*(store.create(key, b"1", ttl=60) for key in keys)))
        with server.connect() as probe:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND query LIKE 'INSERT INTO%'").fetchone()
        assert row == (3,)  # each of the three ran creates (the pool ran only the setup)
        assert [await store.read(key) for key in keys] == [b"1"] * len(keys)
    finally:
        await store.aclose()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
async def test_lean_connections_must_be_a_whole_number(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="lean_connections must be a whole number"):
        PostgresStore("postgresql://127.0.0.1/", lean_connections=bad)  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------


def test_a_bad_dsn_or_table_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="DSN"):
        PostgresStore("host='unterminated")
    with pytest.raises(ConfigurationError, match="table name"):
        PostgresStore("postgresql://127.0.0.1/", table="no-dashes")
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://127.0.0.1/", min_connections=5, max_connections=2)


async def test_a_server_that_is_down_is_unavailable_and_nothing_was_applied(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    server = postgres_server_factory()
    async with on_face(PostgresStore(server.dsn, timeout=0.5), face) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await store.acquire(key, lease_ttl=LONG)
        assert time.monotonic() - started < 5
        assert f"127.0.0.1:{server.port}" in str(raised.value)
        server.start()
        deadline = time.monotonic() + 20
        while True:  # back: the pool reconnects, the data is there
            try:
                lease = await acquire_lease(store, key)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert lease.data == b"v0"


async def test_a_missing_table_is_a_store_error_that_says_so(postgres_dsn: str,
                                                             face: str) -> None:
    store = PostgresStore(postgres_dsn, table=fresh_table(), create_table=False)
    driven = store if face == "async" else None
    if driven is None:
        sync_store = store.sync()
        with pytest.raises(StoreError, match="setup"):
            await asyncio.to_thread(sync_store.acquire, new_key(), lease_ttl=LONG)
        await asyncio.to_thread(sync_store.close)
        return
    with pytest.raises(StoreError, match="setup") as raised:
        await store.acquire(new_key(), lease_ttl=LONG)
    assert not isinstance(raised.value, StoreUnavailable)
    await store.aclose()


# -- connections ---------------------------------------------------------------------


def client_connections(server: PostgresServer) -> int:
    with server.connect() as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    return int(str(row[0]))


async def test_more_operations_than_connections_take_turns(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    """Forty operations at once over two connections: each waits its turn for
    a connection another hands on, none fails, none opens a third (through
    the pool on both faces: ``lean=False``)."""
    server = postgres_server_factory()
    async with on_face(PostgresStore(server.dsn, max_connections=2, lean=False),
                       face) as store:
        keys = [new_key() for _ in range(40)]
        assert all(await asyncio.gather(*(store.create(k, b"v", ttl=LONG) for k in keys)))
        assert await asyncio.gather(*(store.read(k) for k in keys)) == [b"v"] * 40
        assert client_connections(server) <= 2


@pytest.mark.faces("async")
async def test_operations_cancelled_while_waiting_for_a_connection_leave_none_behind(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    """The core cancels an operation at its deadline, also while it waits for
    a connection: a connection handed to it meanwhile goes on to the next
    (the pool's path, ``lean=False``; on the lean path a cancelled caller
    only abandons its answer)."""
    server = postgres_server_factory()
    async with on_face(PostgresStore(server.dsn, max_connections=1, lean=False),
                       face) as store:
        key = new_key()
        assert await store.create(key, b"v", ttl=LONG)
        for _ in range(5):
            reads = [asyncio.create_task(store.read(key)) for _ in range(20)]
            await asyncio.sleep(0)  # every one has started: one holds the connection
            for task in reads[1::2]:
                task.cancel()
            done = await asyncio.gather(*reads, return_exceptions=True)
            assert [d for d in done[::2]] == [b"v"] * 10
        assert await asyncio.wait_for(store.read(key), 2.0) == b"v"


# -- reporting expiries (watch_expired) ----------------------------------------------


def insert_expired(dsn: str, table: str, data: dict[str, bytes]) -> None:
    """A row for each key of ``data``, past its idle deadline."""
    with psycopg.connect(dsn, autocommit=True) as db, db.cursor() as cursor:
        cursor.executemany(
            f"""INSERT INTO "{table}" (key, data, token, expires_at)
                VALUES (%s, %s, 1, now() - interval '1 minute')""", list(data.items()))


async def test_an_expired_session_is_reported_once_by_the_background_purge(
    postgres_dsn: str, face: str
) -> None:
    table, key = fresh_table(), new_key()
    async with on_face(PostgresStore(postgres_dsn, table=table, purge_interval=0.05),
                       face) as store:
        reports = Reports()
        await watch(store, reports)
        insert_expired(postgres_dsn, table, {key: b"v0"})
        await reports.heard(1, traffic=lambda: store.read(new_key()))  # a due purge starts
        assert await store.purge_expired() == 0
        assert reports.keys == [key]
    if face == "async":
        assert reports.on_loop == [True]  # awaited on the loop
        assert reports.threads == [reports.loop_thread]
    else:
        assert reports.threads == ["sessionware-postgres-purge"]  # the thread that purged


async def test_purge_expired_reports_sessions_and_no_bookkeeping_record(
    postgres_dsn: str, face: str
) -> None:
    """Data beginning with a NUL byte is the core's (a tombstone, a user
    index): removed, counted, never reported. Empty data is a session's."""
    table, session, empty = fresh_table(), new_key(), new_key()
    async with on_face(PostgresStore(postgres_dsn, table=table), face) as store:
        reports = Reports()
        await watch(store, reports)
        insert_expired(postgres_dsn, table, {new_key(): b"\x00tombstone", session: b"v0",
                                             new_key(): b"\x00", empty: b""})
        assert await store.purge_expired() == 4
        assert sorted(reports.keys) == sorted([session, empty])  # by the time it returns
    if face == "async":
        assert reports.on_loop == [True, True]
    else:
        assert all(thread.startswith("sync-face") for thread in reports.threads)  # the caller's


async def test_a_report_that_raises_stops_neither_the_purge_nor_the_background_purges(
    postgres_dsn: str, face: str, caplog: pytest.LogCaptureFixture
) -> None:
    table, first, second, later = fresh_table(), new_key(), new_key(), new_key()
    async with on_face(PostgresStore(postgres_dsn, table=table, purge_interval=0.05),
                       face) as store:
        reports = Reports(failing=1)
        await watch(store, reports)
        insert_expired(postgres_dsn, table, {first: b"v0", second: b"v0"})
        await reports.heard(2, traffic=lambda: store.read(new_key()))  # one purge's
        insert_expired(postgres_dsn, table, {later: b"v0"})
        await reports.heard(3, traffic=lambda: store.read(new_key()))  # the next purge's
        assert sorted(reports.keys[:2]) == sorted([first, second])  # one batch, any order
        assert reports.keys[2:] == [later]
    assert "the report of expired session" in caplog.text


@pytest.fixture
def traced_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement the stores (both faces) run on the pool."""
    seen: list[str] = []
    for cls in (PostgresStore, SyncPostgresStore):
        run: Callable[..., Any] = cls._pooled

        def traced(store: Any, statement: str, *args: Any,
                   run: Callable[..., Any] = run) -> Any:
            seen.append(statement)
            return run(store, statement, *args)

        monkeypatch.setattr(cls, "_pooled", traced)
    return seen


async def test_a_store_that_does_not_watch_purges_as_before(
    postgres_dsn: str, face: str, traced_statements: list[str]
) -> None:
    table = fresh_table()
    async with on_face(PostgresStore(postgres_dsn, table=table), face) as store:
        insert_expired(postgres_dsn, table, {new_key(): b"v0"})
        assert await store.purge_expired() == 1
    purges = [sql for sql in traced_statements if sql.lstrip().startswith("DELETE")]
    unwatched = postgres_module.PURGE.format(table=f'"{table}"', async_commit="")
    assert purges and set(purges) == {unwatched}


async def test_stores_purging_at_once_report_each_session_once(
    postgres_dsn: str, face: str
) -> None:
    """Four stores (four processes' worth of connections) purge 2,000 expired
    sessions and their tombstones at once; every session is reported by one."""
    table = fresh_table()
    keys = sorted(new_key() for _ in range(2000))
    async with on_face(PostgresStore(postgres_dsn, table=table), face):
        pass
    purgers = [PostgresStore(postgres_dsn, table=table) for _ in range(4)]
    driven = [on_face(p, face) for p in purgers]
    reports = Reports()  # all four stores' (their threads tell which)
    try:
        opened = [await d.__aenter__() for d in driven]
        for store in opened:
            await watch(store, reports)
        insert_expired(postgres_dsn, table, {
            **dict.fromkeys(keys, b"v0"), **{f"t-{key}": b"\x00t" for key in keys}})
        counts = await asyncio.gather(*(p.purge_expired() for p in opened))
        await reports.heard(len(keys))  # background purges the operations started too
        assert sum(counts) <= 2 * len(keys)
        assert sorted(reports.keys) == keys
    finally:
        for d in driven:
            await d.__aexit__(None, None, None)
    assert sorted(reports.keys) == keys  # and none came late


_PURGER = """
import asyncio, json, sys
from sessionware.stores import PostgresStore

async def main(dsn, table):
    keys = []

    async def report(key):
        keys.append(key)

    async with PostgresStore(dsn, table=table, purge_interval=3600) as store:
        assert await store.watch_expired(report)
        print("ready", flush=True)
        sys.stdin.readline()
        await store.purge_expired()
    print(json.dumps(keys), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_processes_purging_at_once_report_each_session_once(postgres_dsn: str) -> None:
    table = fresh_table()
    keys = sorted(new_key() for _ in range(3000))
    async with PostgresStore(postgres_dsn, table=table):
        pass
    children = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PURGER, postgres_dsn, table,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(3)]
    try:
        for child in children:
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"ready"
        insert_expired(postgres_dsn, table, {
            **dict.fromkeys(keys, b"v0"), **{f"t-{key}": b"\x00t" for key in keys}})
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        heard = []
        for child in children:
            assert child.stdout is not None
            heard += json.loads(await asyncio.wait_for(child.stdout.read(), 60))  # to its end
    finally:
        for child in children:
            await child.wait()
    assert sorted(heard) == keys
    assert [child.returncode for child in children] == [0, 0, 0]
