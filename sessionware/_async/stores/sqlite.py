"""SQLiteStore: sessions in one SQLite file (WAL mode), shared by the worker
processes of one host. Design, threads and limits: docs/stores/sqlite.md.

Schema (:meth:`SQLiteStore.setup`, idempotent): the table ``<table>``, one row
per session (key TEXT, data BLOB, token INTEGER; ``locked_until``,
``expires_at``, ``absolute_expires_at``, ``created_at``, ``locked_at`` REAL
wall-clock seconds, NULL for none), and the index ``<table>_expires_at``.

Each write is one statement below (a fenced one changes nothing unless the
live row carries the lease's token; ``acquire`` reads the lease's state after
it only when it took none), inside a ``BEGIN IMMEDIATE`` transaction that the
other writes of the same event loop turn (sync face: of the threads that
waited for the one before) share: group commit.
:mod:`sessionware._async.io.sqlite_runner` runs them. Expired rows go by
sweeps, at most once per ``sweep_interval`` per process. ``wait`` is woken
by a release in this process, else polls with backoff.

Permissions: read and write on the file and on its directory (WAL creates
``<file>-wal`` and ``<file>-shm`` beside it).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from urllib.parse import unquote

from sessionware._async.io.primitives import IS_SYNC, Background, run_blocking, run_on_thread, sleep
from sessionware._async.io.sqlite_runner import GroupCommit, Runner, is_error
from sessionware._async.stores import _sql
from sessionware._async.stores.base import SCAN_BATCH, Store, report_each
from sessionware._async.waiters import Waiters
from sessionware.exceptions import ConfigurationError, StoreError
from sessionware.stores._errors import ErrorTable, Meaning, Row, lease_lost
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_TABLE = "sessionware_sessions"
_MIN_VERSION = (3, 24, 0)
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_SWEEP_BATCH = 500

# The errors (codes, else messages) that mean the database is out of reach
# rather than wrong: the request may succeed later.
_UNAVAILABLE_CODES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                      "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_PROTOCOL", "SQLITE_NOMEM")
_UNAVAILABLE_MESSAGES = ("locked", "busy", "disk I/O error", "unable to open",
                         "disk is full", "readonly database", "out of memory")

# -- SQL ------------------------------------------------------------------------
# Every statement names its table as {table}; parameters are named. Deadlines
# are wall-clock seconds; :now is read once the write lock is held.

# setup(): no-ops, without the write lock, when they exist.
CREATE_TABLE = _sql.create_table("TEXT", "BLOB", "INTEGER", "REAL")

_LIVE = "key = :key AND expires_at > :now"
# The fenced statements affect no row unless the live row carries :token.
_FENCED = f"WHERE {_LIVE} AND token = :token"
# The idle deadline :ttl from :now, capped by the row's hard deadline (NULL: none).
_TARGET = "min(:now + :ttl, coalesce(absolute_expires_at, :now + :ttl))"
# Whether sliding the idle deadline moves it by :refresh_after or more (:ttl NULL: no).
_SLIDE_DUE = f":ttl IS NOT NULL AND {_TARGET} - expires_at >= :refresh_after"

# acquire() when it took no lease: (locked_until or 0.0) of the live row.
LOCK_STATE = f"SELECT coalesce(locked_until, 0.0) FROM {{table}} WHERE {_LIVE}"
# acquire(): :key, :now, :lease_ttl. Bumps the token and dates the lease :now
# when the live row is unlocked or its lease lapsed; RETURNING (token, data).
ACQUIRE = f"""UPDATE {{table}} SET token = token + 1, locked_until = :now + :lease_ttl,
    locked_at = :now WHERE {_LIVE} AND (locked_until IS NULL OR locked_until <= :now)"""
ACQUIRE_RETURNING = ACQUIRE + " RETURNING token, data"
# before SQLite 3.35, after ACQUIRE changed the row in the same transaction
LOAD = "SELECT token, data FROM {table} WHERE key = :key"

# commit(): :key, :token, :now, :data, :ttl. Writes, slides, unlocks.
COMMIT = f"""UPDATE {{table}} SET data = :data, locked_until = NULL, locked_at = NULL,
    expires_at = {_TARGET} {_FENCED}"""
# release(): :key, :token, :now, :ttl, :refresh_after. Unlocks; slides if due.
RELEASE = f"""UPDATE {{table}} SET locked_until = NULL, locked_at = NULL,
    expires_at = CASE WHEN {_SLIDE_DUE} THEN {_TARGET} ELSE expires_at END {_FENCED}"""
# renew(): :key, :token, :now, :lease_ttl. Only while locked: a lapsed lease is
# still held (no newer one took it); a NULL one was ended by commit or release.
RENEW = f"""UPDATE {{table}} SET locked_until = :now + :lease_ttl
{_FENCED} AND locked_until IS NOT NULL"""
# delete(): :key, :token, :now.
DELETE = f"DELETE FROM {{table}} {_FENCED}"
# discard(): :key, :now. The live row whatever its lock; the count says if any.
DISCARD = f"DELETE FROM {{table}} WHERE {_LIVE}"

_RECORD = ", ".join(_sql.RECORD_TIMES)
# inspect(): :key, :now. (data, *_RECORD) of the live row, or no row.
INSPECT = f"SELECT data, {_RECORD} FROM {{table}} WHERE {_LIVE}"
# scan(), one batch: :after, :now, :limit. Up to :limit live rows (key, data,
# *_RECORD) with keys past :after, in key order.
SCAN = f"""SELECT key, data, {_RECORD} FROM {{table}}
WHERE key > :after AND expires_at > :now ORDER BY key LIMIT :limit"""

# read(): :key, :now, :ttl, :refresh_after. (data, slide due) of the live row.
READ = f"SELECT data, {_SLIDE_DUE} FROM {{table}} WHERE {_LIVE}"
# read() when a slide is due; affects no row if another process slid it meanwhile.
TOUCH = f"UPDATE {{table}} SET expires_at = {_TARGET} WHERE {_LIVE} AND {_SLIDE_DUE}"

# create(): :key, :data, :token (microseconds of the wall clock: past those of a
# key deleted or swept), :now, :ttl, :absolute (NULL: none). Inserts an unlocked
# row, or replaces an expired one (its token still grows: a stale lease never
# matches the new session); affects no row when a live row exists.
CREATE = """INSERT INTO {table} (key, data, token, locked_until, expires_at,
                     absolute_expires_at, created_at, locked_at)
VALUES (:key, :data, :token, NULL,
        min(:now + :ttl, coalesce(:absolute, :now + :ttl)), :absolute, :now, NULL)
ON CONFLICT (key) DO UPDATE SET
    data = excluded.data, token = max(excluded.token, {table}.token + 1),
    locked_until = NULL, expires_at = excluded.expires_at,
    absolute_expires_at = excluded.absolute_expires_at,
    created_at = excluded.created_at, locked_at = NULL
WHERE {table}.expires_at <= :now"""

# The sweep: :now, :limit. Deletes up to :limit expired rows, oldest first, one
# batch per write transaction (never holding the write lock long); under the
# lock, so sweeps of several processes never delete a row twice.
SWEEP = """DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit)"""
# The key of a removed row to report, or NULL for the core's records whose data
# begins with a NUL byte (never reported). substr() is NULL for empty data: IS NOT.
_REPORTED = "CASE WHEN substr(data, 1, 1) IS NOT x'00' THEN key END"
# The sweep once watch_expired was called: one row (_REPORTED,) per deleted row,
# read before the commit.
SWEEP_REPORTING = SWEEP + f" RETURNING {_REPORTED}"
# The same before SQLite 3.35: (key, _REPORTED) of the batch, then each deleted.
EXPIRED_BATCH = f"""SELECT key, {_REPORTED} FROM {{table}}
WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit"""
SWEEP_KEY = "DELETE FROM {table} WHERE key = :key"

STATEMENTS = {"lock_state": LOCK_STATE, "acquire": ACQUIRE, "acquire_returning": ACQUIRE_RETURNING,
              "load": LOAD, "commit": COMMIT, "release": RELEASE, "renew": RENEW, "delete": DELETE,
              "discard": DISCARD, "inspect": INSPECT, "scan": SCAN, "read": READ, "touch": TOUCH,
              "create": CREATE, "sweep": SWEEP, "sweep_reporting": SWEEP_REPORTING,
              "expired_batch": EXPIRED_BATCH, "sweep_key": SWEEP_KEY,
              "create_table": CREATE_TABLE, "create_index": _sql.CREATE_INDEX}


def _cannot_open_because(path: str, exc: BaseException) -> str:
    """Why SQLite could not open ``path``, which its message does not say."""
    if "unable to open" not in str(exc) or path == ":memory:":
        return ""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return " (the path is a directory: name a file in it)"
    if not os.path.isdir(directory):
        return f" (its directory {directory!r} does not exist)"
    if not os.path.exists(path):
        return " (no such file: setup() makes it, as the middleware does at start)"
    if not os.access(directory, os.W_OK | os.X_OK):
        return (f" (no permission to write in {directory!r}, where SQLite must create the "
                "file and its -wal and -shm files)")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return " (no permission to read and write the file)"
    return ""


def _errors(path: str) -> ErrorTable:
    """What sqlite3's errors mean: an operation is one transaction, so one
    that found the database busy, locked or full was rolled back."""
    why = functools.partial(_cannot_open_because, path)
    return ErrorTable("SQLite", [
        Row(sqlite3.Error, Meaning.NOT_APPLIED, hint=why, when=lambda exc: is_error(
            exc, _UNAVAILABLE_CODES, _UNAVAILABLE_MESSAGES)),
        Row(sqlite3.Error, Meaning.ERROR, hint=why),
    ])


def _refusal(locked_until: float | None, now: float) -> Locked | None:
    """What acquire answers when it takes no lease: no session, or locked."""
    return None if locked_until is None else Locked(locked_until - now)


class SQLiteStore(Store):
    """Sessions in one SQLite file, shared by the processes of one host.

    :param path: the database file; created on first use (its directory must exist).
    :param table: the table name (letters, digits and ``_``).
    :param busy_timeout: seconds an operation waits for another process's write
        lock before it raises :class:`~sessionware.StoreUnavailable`.
    :param sweep_interval: seconds between background sweeps of expired rows
        (per process); the first operation after it starts the next one.
    """

    def __init__(self, path: str | os.PathLike[str], *, table: str = DEFAULT_TABLE,
                 busy_timeout: float = 5.0, sweep_interval: float = 60.0) -> None:
        self._table = _sql.checked_table(table, 63)
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise ConfigurationError(
                f"SQLiteStore needs SQLite 3.24 or newer; Python links {sqlite3.sqlite_version}")
        self._path = os.fspath(path)
        self._where = repr(self._path)
        self._errors = _errors(self._path)
        self._sql = _sql.statements(STATEMENTS, table=table, index=f"{table}_expires_at")
        self._waiters: Waiters[str] = Waiters()
        self._runner = Runner(self, self._path, busy_timeout, self._errors, logger,
                              on_fork=self._waiters.clear)
        self._group = GroupCommit(self._runner)
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0  # time.monotonic(); 0: the first operation sweeps
        self._purging = Background("sessionware-sqlite-sweep")  # the async face's
        self._report: Callable[[str], Awaitable[object]] | None = None  # watch_expired's

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        parts = url.parts
        if parts.netloc:
            raise url.error("a SQLite URL has no host; write sqlite:///relative.db or "
                            "sqlite:////absolute/path.db (three slashes, then the path)")
        path = unquote(parts.path[1:])  # as SQLAlchemy's: an absolute path has four slashes
        if not path:
            raise url.error("name the database file, e.g. sqlite:///sessions.db")
        if path == ":memory:" or path.startswith("file:"):
            raise url.error("SQLiteStore needs a file that every thread and process opens; "
                            "for sessions in this process's memory use memory://")
        return cls(path, **url.options(cls))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, table={self._table!r})"

    async def setup(self) -> None:
        await self._run("setup", self._setup)

    async def aclose(self) -> None:
        await sleep(0)  # a sweep task just started queues its batch before the close
        executor, self._runner.executor = self._runner.executor, None
        if executor is None:
            return
        try:
            with self._errors.mapped("close", self._where):  # the worker may be sweeping
                await run_on_thread(executor, self._runner.close_connections)
        finally:
            executor.shutdown(wait=False)

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        return await self._write("acquire", self._acquire, key, lease_ttl)

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        await self._write_fenced("commit", lease, {"data": data, "ttl": ttl})
        self._waiters.wake(lease.key)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        params = {"ttl": ttl, "refresh_after": refresh_after}
        await self._write_fenced("release", lease, params)
        self._waiters.wake(lease.key)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._write_fenced("renew", lease, {"lease_ttl": lease_ttl})

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        return await self._run("read", self._read, key, ttl, refresh_after)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        return await self._write("create", self._create, key, data, ttl, absolute_ttl)

    async def delete(self, lease: Lease) -> None:
        await self._write_fenced("delete", lease, {})
        self._waiters.wake(lease.key)

    async def discard(self, key: str) -> bool:
        removed = await self._write("discard", self._discard, key)
        self._waiters.wake(key)
        return removed

    async def inspect(self, key: str) -> Record | None:
        return await self._run("inspect", self._inspect, key)

    def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        return _sql.scan_by_key(
            lambda after, limit: self._run("scan", self._scan_batch, after, limit), batch_size)

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired row, in batches of short write transactions;
        returns how many this call deleted. ``progress`` hears the count of
        each batch that deleted any; once :meth:`watch_expired` was called,
        the sessions of each batch are reported before the next batch."""
        return await _sql.purge_in_batches(self._purge_batch, _SWEEP_BATCH, progress)

    async def _purge_batch(self) -> int:
        swept, expired = await self._run("purge", self._sweep_batch)
        await report_each(self._report, expired)
        return swept

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Report each session this store's sweeps (and :meth:`purge_expired`)
        remove from now on, exactly: each row leaves by one statement, which
        returns its key. A session is reported when a sweep removes it, up to
        ``sweep_interval`` after its deadline; after the batch committed, one
        at a time, on the event loop (async face) or on the thread that swept
        (sync face). A report that raises is logged. Returns ``True``."""
        self._report = report
        return True

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        """Wait for a release in this process, or the backoff delay (which finds
        releases in other processes), or ``timeout``: whichever comes first."""
        await self._waiters.wait(key, min(timeout, backoff_delay(attempt)))

    async def _run(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run one operation (:class:`Runner`), then queue a sweep if one is
        due: after an operation that succeeded only, so that a file that
        cannot be opened is reported once, by the operation, not by a sweep."""
        executor = self._runner.worker()
        with self._errors.mapped(op, self._where):
            done, answer = self._runner.here(fn, *args)
            if not done:
                answer = await run_blocking(executor, self._runner.until_not_busy, fn, *args)
        self._sweep_if_due()
        return cast(_T, answer)

    async def _write(self, op: str, step: Callable[..., _T], *args: Any) -> _T:
        """Run one write, ``step(db, now, *args)``, committed with the others
        of its group (:class:`GroupCommit`); then as :meth:`_run`."""
        with self._errors.mapped(op, self._where):
            answer = await self._group.write(step, *args)
        self._sweep_if_due()
        return answer

    async def _write_fenced(self, op: str, lease: Lease, params: dict[str, Any]) -> None:
        if not await self._write(op, self._fenced, op, lease, params):
            raise lease_lost(lease)

    def _sweep_if_due(self) -> None:
        """Start a background sweep if one is due (checked by every operation,
        since traffic to any one of them may stop)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            if IS_SYNC:
                self._runner.submit(self._sweep)  # batches and reports on the worker
            else:
                self._purging.start(self._sweep)  # batches on the worker, reports here

    async def _sweep(self) -> None:
        """A background sweep: batches until one is not full, each queued on the
        worker thread behind the operations waiting there."""
        try:
            with self._errors.mapped("purge", self._where):
                await _sql.purge_in_batches(self._background_batch, _SWEEP_BATCH, None)
        except StoreError as exc:
            logger.warning("could not sweep expired sessions (next try in %ss): %s",
                           self._sweep_interval, exc)
        finally:
            self._purging.finished()

    async def _background_batch(self) -> int:
        executor = self._runner.executor
        if executor is None or self._runner.closed:
            return 0  # closed meanwhile: do not reopen the file
        batch: tuple[int, list[str]] = await run_blocking(
            executor, self._runner.until_not_busy, self._sweep_batch)
        await report_each(self._report, batch[1])
        return batch[0]

    def _setup(self) -> None:
        self._runner.may_create = True
        db = self._runner.connection()
        # No BEGIN IMMEDIATE: each statement is atomic and takes the write lock
        # only when it has something to create, so setup passes a held lock.
        db.execute(self._sql["create_table"])
        db.execute(self._sql["create_index"])

    # The writes' steps: each runs inside a write transaction, with its time.

    def _acquire(self, db: sqlite3.Connection, now: float, key: str,
                 lease_ttl: float) -> Lease | Locked | None:
        row = self._take(db, {"key": key, "now": now, "lease_ttl": lease_ttl})
        if row is not None:
            return Lease(key, row[0], row[1])
        return _refusal(self._locked_until(db, key, now), now)

    def _take(self, db: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, bytes] | None:
        if _RETURNING:
            rows = db.execute(self._sql["acquire_returning"], params).fetchall()
        elif db.execute(self._sql["acquire"], params).rowcount:
            rows = db.execute(self._sql["load"], params).fetchall()
        else:
            rows = []
        return (rows[0][0], rows[0][1]) if rows else None

    def _locked_until(self, db: sqlite3.Connection, key: str, now: float) -> float | None:
        rows = db.execute(self._sql["lock_state"], {"key": key, "now": now}).fetchall()
        return float(rows[0][0]) if rows else None

    def _fenced(self, db: sqlite3.Connection, now: float, op: str, lease: Lease,
                params: dict[str, Any]) -> bool:
        """Whether the fenced statement ``op`` found the lease's row."""
        params = {**params, "key": lease.key, "token": lease.token, "now": now}
        return bool(db.execute(self._sql[op], params).rowcount)

    def _read(self, key: str, ttl: float | None, refresh_after: float) -> bytes | None:
        db = self._runner.connection()
        params = {"key": key, "now": time.time(), "ttl": ttl, "refresh_after": refresh_after}
        rows = db.execute(self._sql["read"], params).fetchall()
        if not rows:
            return None
        data, slide_due = rows[0]
        if slide_due:
            with self._runner.write(db) as now:
                db.execute(self._sql["touch"], {**params, "now": now})
        return bytes(data)

    def _create(self, db: sqlite3.Connection, now: float, key: str, data: bytes, ttl: float,
                absolute_ttl: float | None) -> bool:
        absolute = None if absolute_ttl is None else now + absolute_ttl
        params = {"key": key, "data": data, "token": int(now * 1e6), "now": now,
                  "ttl": ttl, "absolute": absolute}
        return bool(db.execute(self._sql["create"], params).rowcount == 1)

    def _discard(self, db: sqlite3.Connection, now: float, key: str) -> bool:
        return bool(db.execute(self._sql["discard"], {"key": key, "now": now}).rowcount == 1)

    def _inspect(self, key: str) -> Record | None:
        rows = self._runner.connection().execute(
            self._sql["inspect"], {"key": key, "now": time.time()}).fetchall()
        return _sql.record(key, rows[0]) if rows else None

    def _scan_batch(self, after: str, limit: int) -> list[Record]:
        rows = self._runner.connection().execute(
            self._sql["scan"], {"after": after, "now": time.time(), "limit": limit}).fetchall()
        return _sql.records(rows)

    def _sweep_batch(self) -> tuple[int, list[str]]:
        """One batch of expired rows deleted, committed on return: how many, and
        the keys to report once watch_expired was called (as seen under the
        write lock, so no row expired while watched goes unreported)."""
        db = self._runner.connection()
        with self._runner.write(db) as now:
            params = {"now": now, "limit": _SWEEP_BATCH}
            if self._report is None:
                return int(db.execute(self._sql["sweep"], params).rowcount), []
            if _RETURNING:
                rows = db.execute(self._sql["sweep_reporting"], params).fetchall()
            else:
                batch = db.execute(self._sql["expired_batch"], params).fetchall()
                db.executemany(self._sql["sweep_key"], [{"key": key} for key, _ in batch])
                rows = [(reported,) for _, reported in batch]
        return len(rows), [key for (key,) in rows if key is not None]
