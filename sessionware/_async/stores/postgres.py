"""PostgresStore: sessions in PostgreSQL, one row per session, waiters woken
by LISTEN/NOTIFY. Install with ``pip install sessionware[postgres]`` (psycopg 3
and psycopg_pool). Design, PgBouncer, sizing and failures: docs/stores/postgres.md.

Schema (:meth:`PostgresStore.setup`, or your migrations with ``create_table=False``):
the sequence ``<table>_token``; the table ``<table>``, one row per session (key
text, data bytea, token bigint from the sequence; ``locked_until``,
``expires_at``, ``absolute_expires_at``, ``created_at``, ``locked_at``
timestamptz, NULL for none; ``waiting``: a waiter asked for a NOTIFY); the index
``<table>_expires_at``. Times are the server's ``now()``.

Each operation is one statement below, in autocommit (a fenced one changes
nothing unless the live row carries the lease's token), over the lean path
(:mod:`sessionware._async.io.postgres_pipeline`) or the pool
(:mod:`sessionware._async.io.postgres_pool`). Expired rows go by purges. ``wait``
is woken by a release here or a NOTIFY to the store's one LISTEN connection.

Permissions: ``SELECT, INSERT, UPDATE, DELETE`` on the table and ``USAGE`` on
the sequence; with ``create_table=True`` also ``CREATE`` on the schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from sessionware._async.io.primitives import interruptible
from sessionware._async.stores import _sql
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores._purging import PurgeSchedule
from sessionware._async.stores.base import SCAN_BATCH, PerProcess, Store, report_each
from sessionware.exceptions import ConfigurationError, SessionTooLarge, StoreError, StoreUnavailable
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost
from sessionware.stores.answers import Lease, Locked, Record

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import PoolClosed, PoolTimeout

    from sessionware._async.io.postgres_pipeline import LeanPath, Rows  # needs psycopg too
    from sessionware._async.io.postgres_pool import Lender, sever
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg_pool: pip install sessionware[postgres]"
    ) from exc

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "sessionware_sessions"
_PURGE_BATCH = 500
_MAX_DATA = (1 << 30) - 1  # bytes: PostgreSQL's limit for one bytea value
_LEAN_OPS = ("acquire", "commit", "release", "renew", "read", "create", "delete")
Params = Mapping[str, Any]
# -- SQL ------------------------------------------------------------------------
# Objects are named {table}, {sequence}, {index} (quoted identifiers), parameters
# by name. Each statement runs alone, in autocommit: now() is its own time.

CREATE_SEQUENCE = "CREATE SEQUENCE IF NOT EXISTS {sequence}"
CREATE_TABLE = _sql.create_table(
    "text", "bytea", "bigint", "timestamptz",
    extra=", waiting boolean NOT NULL DEFAULT false", options=" WITH (fillfactor = 80)")
# setup(create_table=False): :table_name. Whether the table exists (NULL: no).
TABLE_EXISTS = "SELECT to_regclass(%(table_name)s)"
# setup(): the sequence, table and index, each made if missing, under a lock
# on the table's name held to the block's end: CREATE ... IF NOT EXISTS is not
# safe against itself (two sessions making one table at the same moment
# collide in the catalog), so setups of several processes take turns.
SETUP = ("DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('sessionware setup {table}')); "
         + "; ".join((CREATE_SEQUENCE, CREATE_TABLE, _sql.CREATE_INDEX)) + "; END $$")

_LIVE = "key = %(key)s AND expires_at > now()"
# {async_commit}: nothing, or with synchronous_commit=False this condition, in
# every statement that writes but acquire: the statement's own transaction then
# commits without waiting for the WAL flush. set_config(..., true) lasts to the
# end of the transaction (the statement), and every row the statement writes
# passes it. Never in acquire: its fencing token must be durable before any
# write it fences. Why in the statement, and the trade: docs/stores/postgres.md,
# "Commits that do not wait for the flush".
ASYNC_COMMIT = " AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
# The fenced statements affect no row unless the live row carries :token.
_FENCED = f"WHERE {_LIVE} AND token = %(token)s{{async_commit}}"
_TTL = "make_interval(secs => %(ttl)s::float8)"
# The idle deadline :ttl from now, capped by the row's hard deadline (NULL: none).
_TARGET = f"least(now() + {_TTL}, coalesce(absolute_expires_at, 'infinity'))"
# Whether sliding the idle deadline moves it by :refresh_after or more (:ttl NULL: no).
_SLIDE_DUE = (f"%(ttl)s::float8 IS NOT NULL AND {_TARGET} - expires_at"
              " >= make_interval(secs => %(refresh_after)s::float8)")
# Notify :channel of the row's key if a waiter flagged it; NULL otherwise.
_WAKE = "RETURNING CASE WHEN waiting THEN pg_notify(%(channel)s, key)::text END"

# acquire(): :key, :lease_ttl; always a synchronous commit (see ASYNC_COMMIT).
# One row (token, data, NULL) when the live row was unlocked or its lease lapsed:
# a token from the sequence, the lease dated now, the waiting flag cleared (its
# waiters were woken by the release that freed it).
# One row (NULL, NULL, seconds left) when the lease is held: the row is flagged
# waiting. No row when absent or expired. A second acquire at once waits for the
# first's row lock and finds the lease held; its seconds left may be 0 or less.
ACQUIRE = f"""WITH live AS (SELECT locked_until FROM {{table}} WHERE {_LIVE}),
taken AS (
    UPDATE {{table}} SET token = nextval('{{sequence}}'),
        locked_until = now() + make_interval(secs => %(lease_ttl)s::float8),
        locked_at = now(), waiting = false
    WHERE {_LIVE} AND (locked_until IS NULL OR locked_until <= now())
    RETURNING token, data
), flagged AS (
    UPDATE {{table}} SET waiting = true
    WHERE {_LIVE} AND locked_until > now() AND NOT waiting AND NOT EXISTS (SELECT FROM taken)
    RETURNING locked_until
)
SELECT token, data, NULL::float8 FROM taken
UNION ALL
SELECT NULL, NULL, extract(epoch FROM
           coalesce((SELECT locked_until FROM flagged), live.locked_until, now()) - now())::float8
FROM live WHERE NOT EXISTS (SELECT FROM taken)"""

# commit(): :key, :token, :data, :ttl, :channel. Writes, slides, unlocks.
COMMIT = f"""UPDATE {{table}} SET data = %(data)s, locked_until = NULL, locked_at = NULL,
    expires_at = {_TARGET} {_FENCED} {_WAKE}"""
# release(): :key, :token, :ttl, :refresh_after, :channel. Unlocks; slides if due.
RELEASE = f"""UPDATE {{table}} SET locked_until = NULL, locked_at = NULL,
    expires_at = CASE WHEN {_SLIDE_DUE} THEN {_TARGET} ELSE expires_at END {_FENCED} {_WAKE}"""
# renew(): :key, :token, :lease_ttl. Only while locked: a lapsed lease is still
# held (no newer one took it); a NULL one was ended by commit or release.
RENEW = f"""UPDATE {{table}} SET locked_until = now() + make_interval(secs => %(lease_ttl)s::float8)
{_FENCED} AND locked_until IS NOT NULL"""
# delete(): :key, :token, :channel.
DELETE = f"DELETE FROM {{table}} {_FENCED} {_WAKE}"
# discard(): :key, :channel. The live row whatever its lock; the count says if any.
DISCARD = f"DELETE FROM {{table}} WHERE {_LIVE}{{async_commit}} {_WAKE}"

_RECORD = ", ".join(f"extract(epoch FROM {column})::float8" for column in _sql.RECORD_TIMES)
# inspect(): :key. (data, *_RECORD) of the live row, or no row.
INSPECT = f"SELECT data, {_RECORD} FROM {{table}} WHERE {_LIVE}"
# scan(), one batch: :after, :limit. Up to :limit live rows (key, data,
# *_RECORD) with keys past :after, in key order; one short read under MVCC.
SCAN = f"""SELECT key, data, {_RECORD} FROM {{table}}
WHERE key > %(after)s AND expires_at > now() ORDER BY key LIMIT %(limit)s"""

# read(): :key, :ttl, :refresh_after. (data) of the live row, or no row; slides
# the idle deadline if due, in the same statement.
READ = f"""WITH slid AS (
    UPDATE {{table}} SET expires_at = {_TARGET}
    WHERE {_LIVE} AND {_SLIDE_DUE}{{async_commit}} RETURNING data)
SELECT data FROM slid
UNION ALL SELECT data FROM {{table}} WHERE {_LIVE} AND NOT EXISTS (SELECT FROM slid)"""

# create(): :key, :data, :ttl, :absolute_ttl (NULL: none). Inserts an unlocked
# row, or replaces an expired one (a new token: a lease on the old session never
# matches); affects no row when a live row has the key.
CREATE = f"""INSERT INTO {{table}} AS s (key, data, token, locked_until, expires_at,
                          absolute_expires_at, created_at, locked_at)
SELECT %(key)s, %(data)s, nextval('{{sequence}}'), NULL,
       least(now() + {_TTL}, coalesce(absolute, 'infinity')), absolute, now(), NULL
FROM (SELECT now() + make_interval(secs => %(absolute_ttl)s::float8) AS absolute) AS deadline
WHERE true{{async_commit}}
ON CONFLICT (key) DO UPDATE SET
    data = excluded.data, token = excluded.token, locked_until = NULL,
    expires_at = excluded.expires_at, absolute_expires_at = excluded.absolute_expires_at,
    waiting = false, created_at = excluded.created_at, locked_at = NULL
WHERE s.expires_at <= now()"""

# purge_expired() and the background purge: :limit. Deletes up to :limit
# expired rows, oldest first, skipping rows another statement holds (another
# purge, a create() reviving the row): each row counted by the one that deleted it.
PURGE = """DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= now()
    ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AND expires_at <= now()
    {async_commit}"""
# PURGE once watch_expired was called: also one row per deleted row, its key,
# or NULL for the core's records whose data begins with a NUL byte (never
# reported). get_byte() fails on empty data, hence the CASE's order.
PURGE_REPORTING = PURGE + """
RETURNING CASE WHEN octet_length(data) = 0 THEN key WHEN get_byte(data, 0) <> 0 THEN key END"""

STATEMENTS = {"acquire": ACQUIRE, "commit": COMMIT, "release": RELEASE, "renew": RENEW,
              "delete": DELETE, "read": READ, "create": CREATE, "purge": PURGE,
              "purge_reporting": PURGE_REPORTING, "discard": DISCARD, "inspect": INSPECT,
              "scan": SCAN, "setup": SETUP}

# SQLSTATE classes and codes that mean "out of reach for now": connection,
# resources, operator intervention, transaction rollback, lock not available,
# and a read-only server (a standby after failover).
_UNAVAILABLE = ("08", "53", "57", "40", "55", "25006")


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


# An error without a SQLSTATE is no answer from the server (the connection
# failed, maybe after the statement ran); one with a SQLSTATE was rolled back.
ERRORS = ErrorTable("PostgreSQL", [
    Row((PoolTimeout, PoolClosed), Meaning.NOT_APPLIED),  # no connection: nothing sent
    Row(psycopg.errors.ConnectionTimeout, Meaning.NOT_APPLIED,
        when=lambda exc: _sqlstate(exc) is None),
    Row(psycopg.Error, Meaning.MAYBE_APPLIED, when=lambda exc: _sqlstate(exc) is None),
    Row(psycopg.Error, Meaning.NOT_APPLIED,
        when=lambda exc: (_sqlstate(exc) or "").startswith(_UNAVAILABLE)),
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


def _fitting(data: bytes) -> bytes:
    if len(data) > _MAX_DATA:
        raise SessionTooLarge(len(data), _MAX_DATA)
    return data


class PostgresStore(Store):
    """Sessions in PostgreSQL.

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param table: the table name (letters, digits and ``_``, up to 50); the
        sequence, index and wake-up channel are named after it.
    :param create_table: :meth:`setup` creates what is missing (``True``), or
        only checks that the table exists (``False``: schemas managed by migrations).
    :param min_connections: connections each process's pool keeps open.
    :param max_connections: most connections each process's pool opens.
    :param timeout: seconds before a stalled statement, a wait for a pooled
        connection or a connection attempt raises :class:`~sessionware.StoreUnavailable`.
    :param prepare: prepare each statement on each connection at its first
        use; ``False`` for PgBouncer older than 1.21 in transaction mode.
    :param listen: wake waiters in other processes by LISTEN/NOTIFY; ``False`` polls.
    :param listen_dsn: where the LISTEN connection goes (default ``dsn``).
    :param purge_interval: seconds between background purges of expired rows
        (per process, jittered).
    :param lean: on the async face, send the session operations over
        ``lean_connections`` pipelined connections per process (needs
        ``prepare``); ``False``: through the pool.
    :param lean_connections: how many, taken in turn (1 or more). On a server
        that waits for the WAL flush at each commit, more than one lets the
        commits of one process share flushes.
    :param synchronous_commit: ``False``: the store's writes other than acquire
        commit without waiting for the server's WAL flush (PostgreSQL's
        ``synchronous_commit = off`` for those transactions only): a server crash
        may lose the last moments of commits, releases and deletes, never corrupts
        and never breaks the fencing (acquire's commit still waits for the flush).
    """

    def __init__(self, dsn: str, *, table: str = DEFAULT_TABLE, create_table: bool = True,
                 min_connections: int = 1, max_connections: int = 10, timeout: float = 5.0,
                 prepare: bool = True, listen: bool = True, listen_dsn: str | None = None,
                 purge_interval: float = 60.0, lean: bool = True,
                 synchronous_commit: bool = True, lean_connections: int = 1) -> None:
        self._table = _sql.checked_table(table, 50)  # room for the derived names' suffixes
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ConfigurationError(
                "need 0 <= min_connections <= max_connections and max_connections >= 1")
        if not isinstance(synchronous_commit, bool):  # "off" would be truthy: durable
            raise ConfigurationError(
                f"synchronous_commit must be True or False, not {synchronous_commit!r}")
        if isinstance(lean_connections, bool) or not isinstance(lean_connections, int) \
                or lean_connections < 1:
            raise ConfigurationError(
                f"lean_connections must be a whole number, 1 or more, not {lean_connections!r}")
        self._where, self._create_table, self._timeout = _where(dsn), create_table, timeout
        self._sql = _sql.statements(STATEMENTS, table=_quoted(table),
                                    sequence=_quoted(f"{table}_token"),
                                    index=_quoted(f"{table}_expires_at"),
                                    async_commit="" if synchronous_commit else ASYNC_COMMIT)
        self._lean = LeanPath.for_store(  # the async face's pipelined connection
            dsn, {op: self._sql[op] for op in _LEAN_OPS}, prepare=prepare and lean,
            timeout=timeout, connections=lean_connections)
        self._lender: PerProcess[Lender] = PerProcess(
            self, lambda: Lender.opened(dsn, min_connections, max_connections, timeout, prepare),
            lambda lender: lender.aclose(timeout))
        self._purging = PurgeSchedule("sessionware-postgres-purge", purge_interval,
                                      self.purge_expired, lambda: self._lender.closed, logger)
        self._report: Callable[[str], Awaitable[object]] | None = None  # watch_expired's
        self._listener = _Listener(listen_dsn or dsn, table, self._where,
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

    async def setup(self) -> None:
        """Create the sequence, table and index if missing (``create_table=False``:
        check that the table exists); safe when several processes set up at once."""
        if not self._create_table:
            _, rows = await self._setup(TABLE_EXISTS, {"table_name": _quoted(self._table)})
            if rows[0][0] is None:
                raise StoreError(f"PostgreSQL at {self._where}: no table {self._table!r} "
                                 "(create it as the store's docs say, or create_table=True)")
            return
        await self._setup(self._sql["setup"], {})

    async def _setup(self, statement: str, params: Params) -> Rows:
        return await self._execute("setup", statement, params, prepare=False, purge_due=False)

    async def aclose(self) -> None:
        """Stop the listener and close the pool's connections."""
        await self._lender.aclose()  # first: no operation starts after it
        await self._listener.aclose()
        if self._lean is not None:
            self._lean.close()

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
        await self._fenced("commit", lease, {"data": _fitting(data), "ttl": ttl})

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", lease, {"ttl": ttl, "refresh_after": refresh_after})

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", lease, {"lease_ttl": lease_ttl}, wakes=False)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        params = {"key": key, "ttl": ttl, "refresh_after": refresh_after}
        try:
            _, rows = await self._execute("read", self._sql["read"], params)
        except StoreUnavailable as exc:  # the one operation tried again: it is idempotent
            if isinstance(exc.__cause__, PoolTimeout):
                raise  # no connection in time: a second wait would only double it
            logger.debug("retrying a read after a connection error")
            _, rows = await self._execute("read", self._sql["read"], params)
        return bytes(rows[0][0]) if rows else None

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        count, _ = await self._execute("create", self._sql["create"], {
            "key": key, "data": _fitting(data), "ttl": ttl, "absolute_ttl": absolute_ttl})
        return count == 1

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", lease, {})

    async def discard(self, key: str) -> bool:
        count, _ = await self._execute("discard", self._sql["discard"],
                                       {"key": key, "channel": self._table})
        self._listener.waiters.wake(key)
        return count == 1

    async def inspect(self, key: str) -> Record | None:
        _, rows = await self._execute("inspect", self._sql["inspect"], {"key": key})
        return _sql.record(key, rows[0]) if rows else None

    def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        return _sql.scan_by_key(self._scan_batch, batch_size)

    async def _scan_batch(self, after: str, limit: int) -> list[Record]:
        _, rows = await self._execute("scan", self._sql["scan"], {"after": after, "limit": limit})
        return _sql.records(rows)

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired row, in batches of short statements that skip
        rows another statement holds; returns how many this call deleted.
        ``progress`` hears the count of each batch that deleted any; once
        :meth:`watch_expired` was called, the sessions of each batch are
        reported before the next batch."""
        statement = self._sql["purge" if self._report is None else "purge_reporting"]
        return await _sql.purge_in_batches(
            lambda: self._purge_batch(statement), _PURGE_BATCH, progress)

    async def _purge_batch(self, statement: str) -> int:
        count, rows = await self._execute("purge", statement, {"limit": _PURGE_BATCH},
                                          purge_due=False)
        await report_each(self._report, [key for (key,) in rows if key is not None])
        return count

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Report each session this store's purges (the background one and
        :meth:`purge_expired`) remove from now on, exactly: each row leaves by
        one statement, which returns its key. A session is reported when a
        purge removes it, up to about ``purge_interval`` after its deadline;
        after the batch's statement, one at a time, on the event loop (async
        face) or on the thread that purged (sync face). A report that raises
        is logged. Returns ``True``."""
        self._report = report
        return True

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._listener.wait(key, timeout, attempt)

    async def _fenced(self, op: str, lease: Lease, params: dict[str, Any], *,
                      wakes: bool = True) -> None:
        params = {**params, "key": lease.key, "token": lease.token, "channel": self._table}
        count, _ = await self._execute(op, self._sql[op], params)
        if count == 0:
            raise lease_lost(lease)
        if wakes:
            self._listener.waiters.wake(lease.key)

    async def _execute(self, op: str, statement: str, params: Params, *,
                       purge_due: bool = True, prepare: bool | None = None) -> Rows:
        """Run one statement: a session operation on the lean path (if any),
        anything else on a pooled connection; then start a purge if one is due."""
        try:
            if self._lean is not None and op in _LEAN_OPS:
                if self._lender.closed:
                    raise StoreError(f"{self!r} is closed")
                return await self._lean.execute(op, params)
            return await self._pooled(statement, params, prepare)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise ERRORS.translate(op, self._where, exc) from exc
        finally:
            if purge_due:
                self._purging.start_if_due()

    async def _pooled(self, statement: str, params: Params, prepare: bool | None) -> Rows:
        lender = await self._lender.get()
        connection = await lender.borrow()

        async def run() -> Rows:
            cursor = await connection.execute(statement, params, prepare=prepare, binary=True)
            return cursor.rowcount, await cursor.fetchall() if cursor.description else []
        try:
            return await interruptible(run, lambda: sever(connection), self._timeout)
        finally:
            await lender.give_back(connection)


class _Listener(WakeupListener[str]):
    """The one LISTEN connection of a store's waiters: wakes those of each notified key."""

    def __init__(self, dsn: str, table: str, where: str, *, enabled: bool, timeout: float) -> None:
        super().__init__("sessionware-postgres-listener", f"listener on {where}", enabled=enabled)
        self._dsn, self._channel, self._timeout = dsn, table, timeout  # the channel: the table

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
