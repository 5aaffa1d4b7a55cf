"""PostgresStore: sessions in PostgreSQL, one row per session, waiters woken
by LISTEN/NOTIFY. Install with ``pip install sessionware[postgres]`` (psycopg 3
and psycopg_pool). Design, PgBouncer, sizing and failures:
docs/stores/postgres.md.

Schema, created by :meth:`PostgresStore.setup` (idempotent, safe from several
processes at once), or by your migrations (then pass ``create_table=False``)::

    CREATE SEQUENCE IF NOT EXISTS sessionware_sessions_token;
    CREATE TABLE IF NOT EXISTS sessionware_sessions (
        key                 text PRIMARY KEY,      -- store key (a hash of the id)
        data                bytea NOT NULL,        -- the serialized session
        token               bigint NOT NULL,       -- fencing token (the sequence)
        locked_until        timestamptz,           -- lease deadline; NULL: unlocked
        expires_at          timestamptz NOT NULL,  -- idle deadline, never past the next
        absolute_expires_at timestamptz,           -- hard deadline; NULL: none
        waiting             boolean NOT NULL DEFAULT false, -- a waiter asked for a NOTIFY
        created_at          timestamptz,           -- when create() wrote the row
        locked_at           timestamptz            -- when the lease was taken; NULL: unlocked
    ) WITH (fillfactor = 80);
    CREATE INDEX IF NOT EXISTS sessionware_sessions_expires_at
        ON sessionware_sessions (expires_at);

The names follow the ``table`` option (``<table>_token``, ``<table>_expires_at``;
the wake-up channel is ``<table>``). Times are the server's ``now()``;
``expires_at > now()`` alone tells a live row.

Operations, each one statement in autocommit (a fenced one changes nothing
unless the live row carries the lease's token); on the async face the session
statements go over one pipelined connection per process
(:mod:`sessionware._async.io.postgres_pipeline`), everything else through the pool:

* ``acquire``: :data:`ACQUIRE` takes the lease when free or lapsed (a token
  from the sequence), else flags the row ``waiting`` and answers the time left.
* ``commit``, ``release``, ``delete``: fenced; ``pg_notify`` when the row is
  flagged ``waiting``.
* ``renew``: fenced, and only while the lease is held.
* ``read``: the data and, when due, the slide of the expiry in one statement.
* ``create``: ``INSERT ... ON CONFLICT`` that replaces only an expired row.
* ``discard``: ``DELETE`` of the live row (``pg_notify`` as above);
  ``inspect``: a ``SELECT``; ``scan``: ``SELECT`` batches in key order.
* ``purge_expired``, and a background purge about once per ``purge_interval``
  per process: ``DELETE`` batches of expired rows locked ``FOR UPDATE SKIP
  LOCKED`` (``RETURNING`` their keys once :meth:`PostgresStore.watch_expired`
  was called).
* ``wait``: woken by a release in this process or by a NOTIFY to the store's
  one listening connection (:mod:`sessionware._async.stores._listener`); re-checks
  with backoff either way.

Permissions: ``SELECT, INSERT, UPDATE, DELETE`` on the table and ``USAGE`` on
the sequence; with ``create_table=True`` also ``CREATE`` on the schema.
``LISTEN`` and ``pg_notify`` need no grant.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import select
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from sessionware._async.io.primitives import Event, ThreadLock, interruptible
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores._purging import PurgeSchedule
from sessionware._async.stores.base import (
    SCAN_BATCH,
    Lease,
    Locked,
    PerProcess,
    Record,
    Store,
    report_each,
    time_budget,
)
from sessionware.exceptions import (
    ConfigurationError,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
)
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost

try:
    import psycopg
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

    from sessionware._async.io.postgres_pipeline import LeanPath  # needs psycopg too
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg_pool: pip install sessionware[postgres]"
    ) from exc

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "sessionware_sessions"
# an identifier that leaves room for the suffixes of the derived names
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")

_PURGE_BATCH = 500
_MAX_DATA = (1 << 30) - 1  # bytes: PostgreSQL's limit for one bytea value

Params = Mapping[str, Any]
# the operations the lean path runs (each a named statement below)
_LEAN_OPS = ("acquire", "commit", "release", "renew", "read", "create", "delete")
_Pool = AsyncConnectionPool["psycopg.AsyncConnection[Any]"]

# -- SQL ------------------------------------------------------------------------
# Every statement names its objects as {table}, {sequence}, {index} (quoted
# identifiers); parameters are named. Each runs alone, in autocommit, so now()
# is the time of that statement. Durations are seconds (float8).

# setup(): no parameters. IF NOT EXISTS makes them no-ops when the objects
# exist; two processes creating them at the same moment may still collide
# (a unique violation in the catalog), and setup() then runs them again.
CREATE_SEQUENCE = "CREATE SEQUENCE IF NOT EXISTS {sequence}"
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    key                 text PRIMARY KEY,
    data                bytea NOT NULL,
    token               bigint NOT NULL,
    locked_until        timestamptz,
    expires_at          timestamptz NOT NULL,
    absolute_expires_at timestamptz,
    waiting             boolean NOT NULL DEFAULT false,
    created_at          timestamptz,
    locked_at           timestamptz
) WITH (fillfactor = 80)"""
CREATE_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)"
# setup(create_table=False): :table_name. Whether the table exists (NULL: no).
TABLE_EXISTS = "SELECT to_regclass(%(table_name)s)"

_TTL = "make_interval(secs => %(ttl)s::float8)"
# The idle deadline ttl from now, capped by the row's hard deadline (NULL: none).
_TARGET = f"least(now() + {_TTL}, coalesce(absolute_expires_at, 'infinity'))"
# Notify the channel of the row's key if a waiter flagged it; NULL otherwise.
_WAKE = "CASE WHEN waiting THEN pg_notify(%(channel)s, key)::text END"

# acquire(): :key, :lease_ttl. One row (token, data, NULL) when the live row was
# unlocked or its lease lapsed: the token is the sequence's next, the lease
# lasts lease_ttl and is dated now (a takeover's too), and the waiting flag is
# cleared (every waiter flagged before was notified by the release that freed
# it, and re-flags if it finds it taken again). One row (NULL, NULL, seconds
# left) when the lease is held: the row is flagged waiting (written only if it
# was not). No row when the session is absent or expired. Two acquires at once:
# the second waits for the first's row lock, re-checks the lease on the row the
# first wrote, finds it held. Its "seconds left" then comes from its own
# snapshot, the row before the first wrote it, and may be 0 or less: the
# caller re-checks at once.
ACQUIRE = """
WITH live AS (
    SELECT locked_until FROM {table} WHERE key = %(key)s AND expires_at > now()
), taken AS (
    UPDATE {table} SET token = nextval('{sequence_name}'),
        locked_until = now() + make_interval(secs => %(lease_ttl)s::float8),
        locked_at = now(), waiting = false
    WHERE key = %(key)s AND expires_at > now()
      AND (locked_until IS NULL OR locked_until <= now())
    RETURNING token, data
), flagged AS (
    UPDATE {table} SET waiting = true
    WHERE key = %(key)s AND expires_at > now() AND locked_until > now() AND NOT waiting
      AND NOT EXISTS (SELECT FROM taken)
    RETURNING locked_until
)
SELECT token, data, NULL::float8 FROM taken
UNION ALL
SELECT NULL, NULL, extract(epoch FROM
           coalesce((SELECT locked_until FROM flagged), live.locked_until, now()) - now())::float8
FROM live WHERE NOT EXISTS (SELECT FROM taken)"""

# commit(): :key, :token, :data, :ttl, :channel. Writes data, slides the idle
# deadline, unlocks, notifies a flagged waiter; affects no row unless the live
# row carries :token.
COMMIT = f"""
UPDATE {{table}} SET data = %(data)s, locked_until = NULL, locked_at = NULL,
    expires_at = {_TARGET}
WHERE key = %(key)s AND token = %(token)s AND expires_at > now()
RETURNING {_WAKE}"""

# release(): :key, :token, :ttl (NULL: keep the deadline), :refresh_after,
# :channel. Unlocks, slides the idle deadline when that moves it by
# refresh_after or more, notifies a flagged waiter; affects no row unless the
# live row carries :token.
RELEASE = f"""
UPDATE {{table}} SET locked_until = NULL, locked_at = NULL, expires_at = CASE
    WHEN %(ttl)s::float8 IS NOT NULL
         AND {_TARGET} - expires_at >= make_interval(secs => %(refresh_after)s::float8)
    THEN {_TARGET} ELSE expires_at END
WHERE key = %(key)s AND token = %(token)s AND expires_at > now()
RETURNING {_WAKE}"""

# renew(): :key, :token, :lease_ttl. Moves the lease deadline (locked_at stays:
# the lease is the same one); affects no row
# unless the live row carries :token and is still locked. A lapsed lease
# (locked_until in the past) is still held, as no newer lease took it; a NULL
# one was ended by commit or release, which keep the token.
RENEW = """
UPDATE {table} SET locked_until = now() + make_interval(secs => %(lease_ttl)s::float8)
WHERE key = %(key)s AND token = %(token)s AND expires_at > now()
  AND locked_until IS NOT NULL"""

# delete(): :key, :token, :channel. Removes the row, notifies a flagged
# waiter; affects no row unless the live row carries :token.
DELETE = f"""
DELETE FROM {{table}} WHERE key = %(key)s AND token = %(token)s AND expires_at > now()
RETURNING {_WAKE}"""

# discard(): :key, :channel. Removes the live row whatever its lock and token,
# notifies a flagged waiter (who finds the session gone); the row count says
# whether there was one. A holder's next fenced statement then affects no row
# (LeaseLost), and nothing re-creates the row but create().
DISCARD = f"""
DELETE FROM {{table}} WHERE key = %(key)s AND expires_at > now()
RETURNING {_WAKE}"""

# The columns of a Record after its key and data, in epoch seconds (every
# write that clears locked_until clears locked_at with it).
_RECORD = """extract(epoch FROM expires_at)::float8, extract(epoch FROM locked_until)::float8,
       extract(epoch FROM created_at)::float8, extract(epoch FROM locked_at)::float8"""

# inspect(): :key. One row (data, *_RECORD) when the row is live, none otherwise.
INSPECT = f"""
SELECT data, {_RECORD}
FROM {{table}} WHERE key = %(key)s AND expires_at > now()"""

# scan(), one batch: :after (the last key of the batch before; '' at first),
# :limit. Up to :limit live rows (key, data, *_RECORD) with keys past :after,
# in key order, by the primary key's index: keyset pagination, each batch one
# short read under MVCC (no row locks).
SCAN = f"""
SELECT key, data, {_RECORD}
FROM {{table}} WHERE key > %(after)s AND expires_at > now() ORDER BY key LIMIT %(limit)s"""

# read(): :key, :ttl (NULL: no slide), :refresh_after. One row (data) when the
# row is live, none otherwise; slides the idle deadline (the row's own write
# lock, for the statement's length, never the session's lease) when that
# moves it by refresh_after or more.
READ = f"""
WITH slid AS (
    UPDATE {{table}} SET expires_at = {_TARGET}
    WHERE key = %(key)s AND expires_at > now() AND %(ttl)s::float8 IS NOT NULL
      AND {_TARGET} - expires_at >= make_interval(secs => %(refresh_after)s::float8)
    RETURNING data
)
SELECT data FROM slid
UNION ALL
SELECT data FROM {{table}}
WHERE key = %(key)s AND expires_at > now() AND NOT EXISTS (SELECT FROM slid)"""

# create(): :key, :data, :ttl, :absolute_ttl (NULL: none). Inserts an unlocked
# row created now, or replaces an expired one (with a new token, so a lease on
# the old session never matches); affects no row when a live row has the key.
CREATE = f"""
INSERT INTO {{table}} AS s (key, data, token, locked_until, expires_at, absolute_expires_at,
                          created_at, locked_at)
SELECT %(key)s, %(data)s, nextval('{{sequence_name}}'), NULL,
       least(now() + {_TTL}, coalesce(absolute, 'infinity')), absolute, now(), NULL
FROM (SELECT now() + make_interval(secs => %(absolute_ttl)s::float8) AS absolute) AS deadline
ON CONFLICT (key) DO UPDATE SET
    data = excluded.data, token = excluded.token, locked_until = NULL,
    expires_at = excluded.expires_at, absolute_expires_at = excluded.absolute_expires_at,
    waiting = false, created_at = excluded.created_at, locked_at = NULL
WHERE s.expires_at <= now()"""

# purge_expired() and the background purge: :limit. Deletes up to :limit
# expired rows, oldest first, found by the expires_at index, skipping rows
# another statement holds (a purge in another process, or a create() reviving
# the row): no purge waits for another, and each row is counted by the one
# that deleted it. The row count is how many.
PURGE = """
DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= now()
    ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND expires_at <= now()"""

# PURGE once watch_expired was called: :limit. Deletes what PURGE deletes and
# returns one row per deleted row: its key, or NULL for the core's bookkeeping
# records (tombstones, user indexes), whose data begins with a NUL byte and
# which are never reported. The row count is how many. The rows come back to
# this statement only, which alone deleted them: each removed row is reported
# once, by the process that purged it. The CASE tests empty data first, as
# get_byte() fails on it (and OR promises no order of evaluation).
PURGE_REPORTING = PURGE + """
RETURNING CASE WHEN octet_length(data) = 0 THEN key WHEN get_byte(data, 0) <> 0 THEN key END"""

# -- errors -------------------------------------------------------------------------

# SQLSTATE classes and codes that mean "out of reach for now": connection
# exceptions, insufficient resources (too many connections, out of memory or
# disk), operator intervention (shutdown, starting up, query cancelled),
# transaction rollbacks (serialization failure, deadlock), lock not available,
# and a read-only server (a standby after failover).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "40", "55")
_UNAVAILABLE_CODES = ("25006",)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def _refused_for_now(exc: BaseException) -> bool:
    sqlstate = _sqlstate(exc)
    return sqlstate is not None and (sqlstate.startswith(_UNAVAILABLE_CLASSES)
                                     or sqlstate in _UNAVAILABLE_CODES)


# What psycopg's errors mean, first match decides. An error without a SQLSTATE
# is no answer from the server (the connection failed, maybe after the
# statement ran); an answer with one means the statement was rolled back.
ERRORS = ErrorTable("PostgreSQL", [
    Row((PoolTimeout, PoolClosed), Meaning.NOT_APPLIED),  # no connection: nothing sent
    Row(psycopg.errors.ConnectionTimeout, Meaning.NOT_APPLIED,
        when=lambda exc: _sqlstate(exc) is None),
    Row(psycopg.Error, Meaning.MAYBE_APPLIED, when=lambda exc: _sqlstate(exc) is None),
    Row(psycopg.Error, Meaning.NOT_APPLIED, when=_refused_for_now),
    Row(psycopg.Error, Meaning.ERROR, when=lambda exc: _sqlstate(exc) == "42P01",
        hint=SETUP_HINT),
    Row(psycopg.Error, Meaning.ERROR),
    Row(OSError, Meaning.MAYBE_APPLIED),
])


def _where(dsn: str) -> str:
    """host:port/dbname of a DSN, for messages (never its password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ConfigurationError(f"bad PostgreSQL DSN: {exc}") from exc
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _quoted(name: str) -> str:
    return f'"{name}"'


def _sever(connection: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down under a statement that overran: the
    driver's wait for the answer ends at once, with an error, and the
    connection is broken (the pool discards it)."""
    try:
        fd = connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # closed already


def _broken(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection is known to be broken, without a round trip:
    an idle connection's socket has nothing to read, unless the server sent an
    error (it is shutting down, it ended the session) or closed it."""
    pgconn = connection.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        # the server's last words (an error: "terminating connection") come
        # before its end of the stream, and one read may see only the words
        for _ in range(3):
            if not poller.poll(0):
                break
            pgconn.consume_input()  # raises once it reads the end of the stream
    except (OSError, psycopg.Error):
        return True
    return pgconn.status != pq.ConnStatus.OK


class PostgresStore(Store):
    """Sessions in PostgreSQL.

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param table: the table name (letters, digits and ``_``, up to 50); the
        sequence, index and wake-up channel are named after it. For another
        schema, set ``search_path`` in the DSN (``options=-csearch_path=...``).
    :param create_table: :meth:`setup` creates the sequence, table and index
        if missing (``True``), or only checks that the table exists
        (``False``: schemas managed by migrations; see the module docs for
        the DDL).
    :param min_connections: connections each process's pool keeps open.
    :param max_connections: most connections each process's pool opens; when
        all are busy an operation waits for one (up to ``timeout``).
    :param timeout: seconds before a stalled statement, a wait for a pooled
        connection or a connection attempt raises
        :class:`~sessionware.StoreUnavailable`.
    :param prepare: prepare each statement on each connection at its first
        use; ``False`` for PgBouncer older than 1.21 in transaction mode.
    :param listen: wake waiters in other processes by LISTEN/NOTIFY; ``False``
        polls with backoff instead.
    :param listen_dsn: where the LISTEN connection goes (default ``dsn``):
        straight to PostgreSQL when ``dsn`` is a transaction-mode PgBouncer.
    :param purge_interval: seconds between background purges of expired rows
        (per process, jittered).
    :param lean: on the async face, send the session operations over one
        pipelined connection per process (:mod:`sessionware._async.io.postgres_pipeline`;
        needs ``prepare``); ``False`` sends them through the pool, as the sync
        face does, and as set-up and purges always go.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        create_table: bool = True,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 5.0,
        prepare: bool = True,
        listen: bool = True,
        listen_dsn: str | None = None,
        purge_interval: float = 60.0,
        lean: bool = True,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"table name {table!r}: use letters, digits and _ (up to 50)")
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ConfigurationError(
                "need 0 <= min_connections <= max_connections and max_connections >= 1")
        self._dsn = dsn
        self._where = _where(dsn)
        self._table = table
        self._channel = table
        self._create_table = create_table
        self._sizes = (min_connections, max_connections)
        self._timeout = timeout
        self._prepare = prepare
        names = {"table": _quoted(table), "sequence": _quoted(f"{table}_token"),
                 "sequence_name": _quoted(f"{table}_token"),
                 "index": _quoted(f"{table}_expires_at")}
        self._sql = {name: template.format(**names) for name, template in (
            ("acquire", ACQUIRE), ("commit", COMMIT), ("release", RELEASE),
            ("renew", RENEW), ("delete", DELETE), ("read", READ), ("create", CREATE),
            ("purge", PURGE), ("purge_reporting", PURGE_REPORTING), ("discard", DISCARD),
            ("inspect", INSPECT), ("scan", SCAN),
            ("create_sequence", CREATE_SEQUENCE),
            ("create_table", CREATE_TABLE), ("create_index", CREATE_INDEX))}
        # the async face's pipelined connection for the session operations
        self._lean = LeanPath.for_store(
            dsn, {op: self._sql[op] for op in _LEAN_OPS}, prepare=prepare and lean,
            timeout=timeout)
        self._lender: PerProcess[_Lender] = PerProcess(
            self, self._opened_lender, lambda lender: lender.aclose(timeout))
        self._purging = PurgeSchedule("sessionware-postgres-purge", purge_interval,
                                      self.purge_expired, lambda: self._lender.closed, logger)
        # watch_expired's report; until then (None) purges return no keys
        self._report: Callable[[str], Awaitable[object]] | None = None
        self._listener = _Listener(listen_dsn or dsn, self._channel, self._where,
                                   enabled=listen, timeout=timeout)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        options, dsn = url.split(cls)  # libpq's options stay in the URL
        try:  # libpq's own parser: what it refuses here, it would refuse at connect
            conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise url.error(str(exc).strip()) from None
        return cls(dsn, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, table={self._table!r})"

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        """Create the sequence, table and index if missing (with
        ``create_table=False``: check that the table exists). Idempotent, and
        safe when several processes set up at the same moment."""
        if not self._create_table:
            _, rows = await self._execute("setup", TABLE_EXISTS,
                                          {"table_name": _quoted(self._table)},
                                          prepare=False, purge_due=False)
            if rows[0][0] is None:
                raise StoreError(f"PostgreSQL at {self._where}: no table {self._table!r} "
                                 "(create it as the store's docs say, or create_table=True)")
            return
        for attempt in range(3):
            try:
                for name in ("create_sequence", "create_table", "create_index"):
                    await self._execute("setup", self._sql[name], {}, prepare=False,
                                        purge_due=False)
                return
            except StoreError as exc:
                # another process created the same object at the same moment
                # (unique_violation in the catalog, or duplicate_table/object):
                # the next try finds it and does nothing
                sqlstate = getattr(exc.__cause__, "sqlstate", None)
                if sqlstate not in ("23505", "42P07", "42710") or attempt == 2:
                    raise

    async def aclose(self) -> None:
        """Stop the listener and close the pool's connections."""
        await self._lender.aclose()  # first: no operation starts after it
        await self._listener.aclose()
        if self._lean is not None:
            self._lean.close()

    # -- operations -----------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        _, rows = await self._execute("acquire", self._sql["acquire"],
                                      {"key": key, "lease_ttl": lease_ttl})
        if not rows:
            return None
        token, data, left = rows[0]
        if token is None:
            return Locked(max(left, 0.001))
        return Lease(key, token, bytes(data))

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        if len(data) > _MAX_DATA:
            raise SessionTooLarge(len(data), _MAX_DATA)
        await self._fenced("commit", lease, {"data": data, "ttl": ttl,
                                             "channel": self._channel})

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", lease, {"ttl": ttl, "refresh_after": refresh_after,
                                              "channel": self._channel})

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", lease, {"lease_ttl": lease_ttl}, wakes=False)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        params = {"key": key, "ttl": ttl, "refresh_after": refresh_after}
        try:
            _, rows = await self._execute("read", self._sql["read"], params)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise  # no connection in time: a second wait would only double it
            logger.debug("retrying a read after a connection error")
            _, rows = await self._execute("read", self._sql["read"], params)
        return bytes(rows[0][0]) if rows else None

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        if len(data) > _MAX_DATA:
            raise SessionTooLarge(len(data), _MAX_DATA)
        count, _ = await self._execute("create", self._sql["create"], {
            "key": key, "data": data, "ttl": ttl, "absolute_ttl": absolute_ttl})
        return count == 1

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", lease, {"channel": self._channel})

    async def discard(self, key: str) -> bool:
        count, _ = await self._execute("discard", self._sql["discard"],
                                       {"key": key, "channel": self._channel})
        self._listener.waiters.wake(key)
        return count == 1

    async def inspect(self, key: str) -> Record | None:
        _, rows = await self._execute("inspect", self._sql["inspect"], {"key": key})
        if not rows:
            return None
        data, *times = rows[0]
        return Record(key, bytes(data), *times)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        after = ""
        while True:
            _, rows = await self._execute("scan", self._sql["scan"],
                                          {"after": after, "limit": batch_size})
            if rows:
                yield [Record(key, bytes(data), *times) for key, data, *times in rows]
            if len(rows) < batch_size:
                return
            after = rows[-1][0]

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired row; returns how many this call deleted.

        Batch by batch, each its own short statement that skips rows another
        statement holds, so purges in several processes never wait for each
        other and operations run between batches; ``progress`` hears the count
        of each batch that deleted any. Once :meth:`watch_expired` was called,
        the sessions of each batch are reported after its statement, before
        the next batch."""
        purged = 0
        statement = self._sql["purge" if self._report is None else "purge_reporting"]
        while True:
            count, rows = await self._execute("purge", statement, {"limit": _PURGE_BATCH},
                                              purge_due=False)
            purged += count
            if progress is not None and count:
                progress(count)
            await report_each(self._report, [key for (key,) in rows if key is not None])
            if count < _PURGE_BATCH:
                return purged

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Report each session this store's purges remove from now on (the
        background purge and :meth:`purge_expired`): exactly, since expired
        rows leave only by a purge, and each row by the one statement (of
        whichever process) that deleted it, which returns its key.

        A session is reported when a purge removes it, not at its deadline:
        up to about ``purge_interval`` after it, once an operation starts the
        purge (never if the key is created again first). Reports come after the
        batch's statement, with no connection held, one at a time:
        awaited on the event loop (async face) or called on the thread that
        purged (sync face: the background purge's thread, or the caller of
        ``purge_expired``). A report that raises is logged. Rows removed by a
        process that does not watch are not reported. Returns ``True``."""
        self._report = report
        return True

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._listener.wait(key, timeout, attempt)

    # -- running statements ----------------------------------------------------

    async def _fenced(self, op: str, lease: Lease, params: dict[str, Any], *,
                      wakes: bool = True) -> None:
        count, _ = await self._execute(op, self._sql[op],
                                       {**params, "key": lease.key, "token": lease.token})
        if count == 0:
            raise lease_lost(lease)
        if wakes:
            self._listener.waiters.wake(lease.key)

    async def _execute(self, op: str, statement: str, params: Params, *,
                       purge_due: bool = True, prepare: bool | None = None,
                       ) -> tuple[int, list[tuple[Any, ...]]]:
        """Run one statement: a session operation on the lean path (the
        async face), anything else on a pooled connection. Its row count and
        rows; then start a background purge if one is due."""
        if self._lean is not None and op in _LEAN_OPS:
            if self._lender.closed:
                raise StoreError(f"{self!r} is closed")
            try:
                return await self._lean.execute(op, params)
            except (psycopg.Error, OSError) as exc:
                raise ERRORS.translate(op, self._where, exc) from exc
            finally:
                if purge_due:
                    self._purging.start_if_due()
        lender = await self._lender.get()
        try:
            connection = await lender.borrow()
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise ERRORS.translate(op, self._where, exc) from exc
        try:
            return await interruptible(
                lambda: self._statement(connection, statement, params, prepare),
                lambda: _sever(connection), self._timeout)
        except (psycopg.Error, OSError) as exc:
            raise ERRORS.translate(op, self._where, exc) from exc
        finally:
            await lender.give_back(connection)
            if purge_due:
                self._purging.start_if_due()

    @staticmethod
    async def _statement(connection: psycopg.AsyncConnection[Any], statement: str,
                         params: Params, prepare: bool | None,
                         ) -> tuple[int, list[tuple[Any, ...]]]:
        cursor = await connection.execute(statement, params, prepare=prepare, binary=True)
        rows = await cursor.fetchall() if cursor.description is not None else []
        return cursor.rowcount, rows

    async def _opened_lender(self) -> _Lender:
        pool = self._new_pool()
        await pool.open(wait=False)  # starts its workers; connects in the background
        return _Lender(pool, self._sizes[1], self._timeout)

    def _new_pool(self) -> _Pool:
        low, high = self._sizes
        return AsyncConnectionPool(
            self._dsn, open=False, min_size=low, max_size=high, timeout=self._timeout,
            # a pool that failed to reconnect for reconnect_timeout stops
            # trying (psycopg_pool's backoff doubles without a cap) and the
            # next operation that needs a connection starts a fresh attempt,
            # so a server back after a long outage is found at once
            name="sessionware", reconnect_timeout=max(5.0, self._timeout),
            kwargs={"autocommit": True, "prepare_threshold": 0 if self._prepare else None,
                    "connect_timeout": max(1, round(self._timeout))})



class _Turn:
    """An operation waiting for a connection another operation hands on (or,
    with ``retry``, for a free place to take one from the pool)."""

    __slots__ = ("connection", "event", "retry")

    def __init__(self) -> None:
        self.event = Event()
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.retry = False


class _Lender:
    """The connections a store checked out of its pool, each lent to one
    operation at a time and kept idle between operations, out of the pool:
    psycopg_pool's checkout and return (an asyncio timeout, locks and a
    condition, a state check and reset) cost about a third of an operation's
    time in the client. The pool opens them (at most ``limit``), reconnects
    in the background, and discards the broken ones handed back.

    An operation takes an idle connection, else one from the pool while fewer
    than ``limit`` are out, else waits its turn: a connection given back goes
    straight to the first operation waiting (FIFO), or, when it is discarded,
    that operation takes its place in the pool. Idle connections the server
    closed meanwhile (a restart, a terminated session) are found without a
    round trip and discarded."""

    def __init__(self, pool: _Pool, limit: int, timeout: float) -> None:
        self.pool = pool
        self._limit = limit
        self._timeout = timeout  # seconds an operation may wait for a connection
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._out = 0  # checked out of the pool: idle, lent, or being opened
        self._turns: collections.deque[_Turn] = collections.deque()
        self._lock = ThreadLock()
        self._closed = False

    async def borrow(self) -> psycopg.AsyncConnection[Any]:
        while True:
            connection, turn = None, None
            with self._lock:
                if self._closed:
                    raise PoolClosed("the store was closed")
                if self._idle:
                    connection = self._idle.pop()
                elif self._out < self._limit:
                    self._out += 1
                else:
                    turn = _Turn()
                    self._turns.append(turn)
            if turn is not None:
                connection = await self._wait(turn)
                if connection is None:
                    continue  # a place came free: take one from the pool
            elif connection is None:
                try:
                    connection = await self.pool.getconn(timeout=time_budget(self._timeout))
                except BaseException:
                    self._lost()
                    raise
            if not _broken(connection):
                return connection
            await self._discard(connection)

    async def _wait(self, turn: _Turn) -> psycopg.AsyncConnection[Any] | None:
        try:
            await turn.event.wait(time_budget(self._timeout))
        except BaseException:  # cancelled: what was handed to this turn goes on
            if self._withdraw(turn):
                if turn.connection is not None:
                    await self.give_back(turn.connection)
                elif turn.retry:
                    self._lost(returned=False)
            raise
        if not self._withdraw(turn):
            raise PoolTimeout(f"no connection came free within {time_budget(self._timeout):.1f}s")
        return turn.connection

    def _withdraw(self, turn: _Turn) -> bool:
        """Take ``turn`` out of the queue; whether it was served already."""
        with self._lock:
            try:
                self._turns.remove(turn)
            except ValueError:
                return True
            return False

    async def give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        pgconn = connection.pgconn
        if (pgconn.status == pq.ConnStatus.OK
                and pgconn.transaction_status == pq.TransactionStatus.IDLE):
            with self._lock:
                turn = None if self._closed or not self._turns else self._turns.popleft()
                if turn is not None:
                    turn.connection = connection
                elif not self._closed:
                    self._idle.append(connection)
                    return
            if turn is not None:
                turn.event.set()
                return
        await self._discard(connection)

    async def _discard(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Hand ``connection`` back to the pool (which discards a broken one,
        and resets and keeps one left in a transaction)."""
        self._lost()
        await self.pool.putconn(connection)

    def _lost(self, *, returned: bool = True) -> None:
        """One connection fewer out of the pool (``returned``), or a place a
        cancelled turn did not take: the first waiting turn takes it."""
        with self._lock:
            if returned:
                self._out -= 1
            turn = self._turns.popleft() if self._turns else None
            if turn is not None:
                turn.retry = True
        if turn is not None:
            turn.event.set()

    async def aclose(self, timeout: float) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            turns, self._turns = self._turns, collections.deque()
        for turn in turns:
            turn.retry = True
            turn.event.set()
        for connection in idle:
            await self.pool.putconn(connection)
        await self.pool.close(timeout=timeout)


class _Listener(WakeupListener[str]):
    """The one LISTEN connection of a store's waiters: it wakes the waiters
    of each notified key."""

    def __init__(self, dsn: str, channel: str, where: str, *, enabled: bool,
                 timeout: float) -> None:
        super().__init__("sessionware-postgres-listener", f"listener on {where}",
                         enabled=enabled)
        self._dsn = dsn
        self._channel = channel
        self._timeout = timeout

    async def _listen_once(self, run: Run) -> bool:
        connection = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, prepare_threshold=None,
            connect_timeout=max(1, round(self._timeout)))
        try:
            await connection.execute(f"LISTEN {_quoted(self._channel)}")
            self._began_listening()
            while not run.stop.is_set():
                async for notification in connection.notifies(timeout=LISTEN_TICK):
                    self.waiters.wake(notification.payload)
        finally:
            self._stopped_listening()
            await connection.close()
        return False  # stopped
