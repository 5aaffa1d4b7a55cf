# Generated from sessionware/_async/stores/sqlite.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncSQLiteStore: sessions in one SQLite file (WAL mode), shared by the worker
processes of one host. Design, threads and limits: docs/stores/sqlite.md.

Schema, created by :meth:`SyncSQLiteStore.setup` (idempotent, safe from several
processes at once); the table name is the ``table`` option::

    CREATE TABLE IF NOT EXISTS sessionware_sessions (
        key                 TEXT PRIMARY KEY,  -- store key (a hash of the id)
        data                BLOB NOT NULL,     -- the serialized session
        token               INTEGER NOT NULL,  -- fencing token
        locked_until        REAL,              -- lease deadline, NULL when unlocked
        expires_at          REAL NOT NULL,     -- idle deadline, never past the next
        absolute_expires_at REAL,              -- hard deadline, NULL for none
        created_at          REAL,              -- when create() wrote the row
        locked_at           REAL               -- when the lease was taken, NULL when unlocked
    );
    CREATE INDEX IF NOT EXISTS sessionware_sessions_expires_at
        ON sessionware_sessions (expires_at);

Times are wall-clock seconds (:func:`time.time`, read once a write holds the
write lock); ``expires_at > now`` alone tells a live row.

Operations (each write one ``BEGIN IMMEDIATE`` transaction; a fenced one
changes nothing unless the live row carries the lease's token):

* ``acquire``: a plain read of the lease, then, when it is free or lapsed,
  :data:`ACQUIRE` (``UPDATE ... RETURNING``; before SQLite 3.35, :data:`LOAD` after it).
* ``commit``, ``release``, ``renew``, ``delete``: one fenced ``UPDATE`` or ``DELETE``.
* ``read``: a ``SELECT``, and :data:`TOUCH` when the expiry's slide is due.
* ``create``: an upsert that replaces only an expired row.
* ``discard``: ``DELETE`` of the live row; ``inspect``: a ``SELECT``; ``scan``:
  ``SELECT`` batches in key order.
* ``purge_expired``, and a background sweep at most once per ``sweep_interval``
  per process: ``DELETE`` batches by the ``expires_at`` index (``RETURNING``
  the keys once :meth:`SyncSQLiteStore.watch_expired` was called).
* ``wait``: woken by a release in this process, else polls with backoff.

Permissions: read and write on the file and on its directory (WAL creates
``<file>-wal`` and ``<file>-shm`` beside it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from urllib.parse import unquote

from sessionware._forks import ForkGate, generation
from sessionware._perthread import PerThread
from sessionware._sync.io.primitives import (
    IS_SYNC,
    Background,
    run_blocking,
    run_on_thread,
    time_left,
)
from sessionware._sync.stores.base import (
    SCAN_BATCH,
    Lease,
    Locked,
    Record,
    SyncStore,
    backoff_delay,
    report_each,
    time_budget,
)
from sessionware._sync.waiters import Waiters
from sessionware.exceptions import ConfigurationError, StoreError
from sessionware.stores._errors import ErrorTable, Meaning, Row, lease_lost

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SyncSQLiteStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_TABLE = "sessionware_sessions"
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MIN_VERSION = (3, 24, 0)
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_SWEEP_BATCH = 500

# Error codes (by name prefix, so extended codes match) that mean the database
# is out of reach rather than wrong: the request may succeed later.
_UNAVAILABLE_CODES = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
)
# Python 3.10 has no error codes on the exception: match SQLite's messages.
_UNAVAILABLE_MESSAGES = (
    "locked",
    "busy",
    "disk I/O error",
    "unable to open",
    "disk is full",
    "readonly database",
    "out of memory",
)

# -- SQL ------------------------------------------------------------------------
# Every statement names its table as {table}; parameters are named. Deadlines
# are wall-clock seconds; :now is read once the write lock is held.

# Run on every new connection. The page size applies to a file that has no
# table yet, and stays the file's: 1 KiB pages make each write transaction's WAL
# frame a quarter of the 4 KiB default, which measured about a fifth less CPU per
# acquire + commit (a session row is tens of bytes to a few KiB). WAL persists in
# the file; NORMAL sync is safe in WAL mode (a power cut may lose the last
# commits, never corrupt the file).
PRAGMAS = ("PRAGMA page_size = 1024", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")

# Run on a connection of the event loop's thread (async face): it never
# checkpoints, which flushes to disk; CHECKPOINT does, on the worker thread,
# after every _CHECKPOINT_EVERY write transactions of the loop's thread (with
# this process's writers held off once the WAL is large: SyncSQLiteStore._checkpoint).
# PASSIVE: copies what it can without waiting for readers or writers.
LOOP_PRAGMAS = ("PRAGMA wal_autocheckpoint = 0",)
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"

# Opens every write: takes the write lock now (waiting up to the busy timeout),
# so no step inside fails half-way for want of it.
BEGIN = "BEGIN IMMEDIATE"
COMMIT_TRANSACTION = "COMMIT"

# setup(): no parameters; no-ops, without the write lock, when they exist.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    key                 TEXT PRIMARY KEY,
    data                BLOB NOT NULL,
    token               INTEGER NOT NULL,
    locked_until        REAL,
    expires_at          REAL NOT NULL,
    absolute_expires_at REAL,
    created_at          REAL,
    locked_at           REAL
)"""
CREATE_INDEX = "CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at)"

# The idle deadline :ttl from :now, capped by the row's hard deadline (NULL: none).
_TARGET = "min(:now + :ttl, coalesce(absolute_expires_at, :now + :ttl))"

# acquire(), the read before the write: (locked_until or 0.0) of the live row
# :key, or no row when the session does not exist or expired.
LOCK_STATE = """
SELECT coalesce(locked_until, 0.0) FROM {table} WHERE key = :key AND expires_at > :now"""

# acquire(): :key, :now, :lease_ttl. Bumps the token and sets the lease (dated
# :now, a takeover's too) when the row is live and unlocked (or its lease
# lapsed); returns (token, data), or no row when it is absent, expired or locked.
ACQUIRE = """
UPDATE {table} SET token = token + 1, locked_until = :now + :lease_ttl, locked_at = :now
WHERE key = :key AND expires_at > :now AND (locked_until IS NULL OR locked_until <= :now)"""
ACQUIRE_RETURNING = ACQUIRE + " RETURNING token, data"
# acquire() before SQLite 3.35, after ACQUIRE changed a row in the same
# transaction: (token, data) of :key.
LOAD = "SELECT token, data FROM {table} WHERE key = :key"

# commit(): :key, :token, :now, :data, :ttl. Writes data, slides the idle
# deadline, unlocks; affects no row unless the live row carries :token.
COMMIT = f"""
UPDATE {{table}} SET data = :data, locked_until = NULL, locked_at = NULL,
    expires_at = {_TARGET}
WHERE key = :key AND token = :token AND expires_at > :now"""

# release(): :key, :token, :now, :ttl (NULL: keep the deadline), :refresh_after.
# Unlocks and slides the idle deadline when that moves it by :refresh_after or
# more; affects no row unless the live row carries :token.
RELEASE = f"""
UPDATE {{table}} SET locked_until = NULL, locked_at = NULL, expires_at = CASE
    WHEN :ttl IS NOT NULL AND {_TARGET} - expires_at >= :refresh_after THEN {_TARGET}
    ELSE expires_at END
WHERE key = :key AND token = :token AND expires_at > :now"""

# renew(): :key, :token, :now, :lease_ttl. Moves the lease deadline (locked_at
# stays: the lease is the same one); affects no
# row unless the live row carries :token and is still locked. A lapsed lock
# (locked_until in the past) is still held, as no newer lease took it; a NULL
# one was ended by commit or release, which keep the token.
RENEW = """
UPDATE {table} SET locked_until = :now + :lease_ttl
WHERE key = :key AND token = :token AND expires_at > :now AND locked_until IS NOT NULL"""

# delete(): :key, :token, :now. Affects no row unless the live row carries :token.
DELETE = "DELETE FROM {table} WHERE key = :key AND token = :token AND expires_at > :now"

# discard(): :key, :now. Removes the live row whatever its lock and token; the
# row count says whether there was one. A holder's next fenced statement then
# affects no row (LeaseLost), and nothing re-creates the row but create().
DISCARD = "DELETE FROM {table} WHERE key = :key AND expires_at > :now"

# The columns of a Record after its key and data (every write that clears
# locked_until clears locked_at with it).
_RECORD = "expires_at, locked_until, created_at, locked_at"

# inspect(): :key, :now. (data, *_RECORD) of the live row, or no row; takes no
# write lock.
INSPECT = f"""
SELECT data, {_RECORD} FROM {{table}} WHERE key = :key AND expires_at > :now"""

# scan(), one batch: :after (the last key of the batch before; '' at first),
# :now, :limit. Up to :limit live rows (key, data, *_RECORD) with keys past
# :after, in key order, by the primary key's index: keyset pagination, each
# batch one read that takes no write lock.
SCAN = f"""
SELECT key, data, {_RECORD} FROM {{table}}
WHERE key > :after AND expires_at > :now ORDER BY key LIMIT :limit"""

# read(): :key, :now, :ttl (NULL: no slide), :refresh_after. Returns
# (data, slide due) of the live row, or no row; takes no write lock.
READ = f"""
SELECT data, :ttl IS NOT NULL AND {_TARGET} - expires_at >= :refresh_after
FROM {{table}} WHERE key = :key AND expires_at > :now"""

# read() when a slide is due: :key, :now, :ttl, :refresh_after. Affects no row
# when the row is gone, expired, or another process slid it meanwhile.
TOUCH = f"""
UPDATE {{table}} SET expires_at = {_TARGET}
WHERE key = :key AND expires_at > :now AND {_TARGET} - expires_at >= :refresh_after"""

# create(): :key, :data, :token, :now, :ttl, :absolute (NULL: none). Inserts an
# unlocked row created :now, or replaces an expired one (its token still grows,
# so a stale lease never matches the new session); affects no row when a live
# row exists.
CREATE = """
INSERT INTO {table} (key, data, token, locked_until, expires_at, absolute_expires_at,
                     created_at, locked_at)
VALUES (:key, :data, :token, NULL,
        min(:now + :ttl, coalesce(:absolute, :now + :ttl)), :absolute, :now, NULL)
ON CONFLICT (key) DO UPDATE SET
    data = excluded.data, token = max(excluded.token, {table}.token + 1),
    locked_until = NULL, expires_at = excluded.expires_at,
    absolute_expires_at = excluded.absolute_expires_at,
    created_at = excluded.created_at, locked_at = NULL
WHERE {table}.expires_at <= :now"""

# The sweep: :now, :limit. Deletes up to :limit expired rows, oldest first, found
# by the expires_at index; the row count is how many. One batch per write
# transaction, so a backlog never holds the write lock long; under the write
# lock, so sweepers in several processes never delete (nor count) a row twice,
# and a row create() revived meanwhile is no longer expired.
SWEEP = """
DELETE FROM {table} WHERE key IN (
    SELECT key FROM {table} WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit)"""

# The key of a removed row to report (watch_expired), or NULL for the core's
# bookkeeping records (tombstones, user indexes), whose data begins with a NUL
# byte and which are never reported. substr() of a BLOB counts bytes, and is
# NULL for empty data, which begins with no NUL: hence IS NOT, not <>.
_REPORTED = "CASE WHEN substr(data, 1, 1) IS NOT x'00' THEN key END"

# The sweep once watch_expired was called (SQLite 3.35 on): :now, :limit.
# Deletes what SWEEP deletes and returns one row per deleted row, (_REPORTED,):
# the row count is len(rows). The rows come back to this statement's
# connection only, so each removed row is reported by the one process whose
# sweep removed it; read them all before the commit.
SWEEP_REPORTING = SWEEP + f" RETURNING {_REPORTED}"

# SWEEP_REPORTING before SQLite 3.35, in one write transaction: :now, :limit.
# EXPIRED_BATCH reads (key, _REPORTED) of the rows SWEEP would delete, then
# SWEEP_KEY deletes each by :key. Under the write lock nothing changes them
# in between.
EXPIRED_BATCH = f"""
SELECT key, {_REPORTED} FROM {{table}}
WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit"""
SWEEP_KEY = "DELETE FROM {table} WHERE key = :key"


def _cannot_open_because(path: str, exc: BaseException) -> str:
    """Why SQLite could not open ``path``, which its message does not say."""
    if "unable to open" not in str(exc) or path == ":memory:":
        return ""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return " (the path is a directory: name a file in it)"
    if not os.path.isdir(directory):
        return f" (its directory {directory!r} does not exist)"
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f" (no permission to write in {directory!r}, where SQLite must create the "
            "file and its -wal and -shm files)"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return " (no permission to read and write the file)"
    return ""


def _errors(path: str) -> ErrorTable:
    """What sqlite3's errors mean: an operation is one transaction, so one
    that found the database busy, locked or full was rolled back."""

    def why(exc: BaseException) -> str:
        return _cannot_open_because(path, exc)

    return ErrorTable(
        "SQLite",
        [
            Row(sqlite3.Error, Meaning.NOT_APPLIED, when=_is_unavailable, hint=why),
            Row(sqlite3.Error, Meaning.ERROR, hint=why),
        ],
    )


def _is_unavailable(exc: BaseException) -> bool:
    name: str | None = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(_UNAVAILABLE_CODES)
    return any(part in str(exc) for part in _UNAVAILABLE_MESSAGES)


# Every SQLite call passes it: a process never forks inside one (the child
# would inherit SQLite's in-process lock state of that call for ever).
_FORKS = ForkGate()

_CHECKPOINT_EVERY = 200  # about SQLite's own 1000-page default, at 2-5 pages a write
_LOOP_WRITER_WAIT = 0.001  # seconds the loop's thread waits for this process's writer
_WAL_RESTART_BYTES = 4 << 20  # a WAL this large is checkpointed with the writers held off
_BUSY_BASE = 0.0001  # seconds: the first wait for a held write lock, doubled per try
_BUSY_CAP = 0.005  # the longest one: a write transaction lasts tens of microseconds


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    name: str | None = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def _refusal(locked_until: float | None, now: float) -> Locked | None:
    """What acquire answers when it takes no lease: no session, or locked."""
    return None if locked_until is None else Locked(locked_until - now)


def _worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionware-sqlite")


def _first_token(now: float) -> int:
    """The token of a new record: microseconds of the wall clock, so a record
    created again under a deleted or swept key starts past its old tokens."""
    return int(now * 1_000_000)


class SyncSQLiteStore(SyncStore):
    """Sessions in one SQLite file, shared by the processes of one host.

    :param path: the database file; created on first use (its directory must exist).
    :param table: the table name (letters, digits and ``_``).
    :param busy_timeout: seconds an operation waits for another process's write
        lock before it raises :class:`~sessionware.StoreUnavailable`.
    :param sweep_interval: seconds between background sweeps of expired rows
        (per process); the first operation after it starts the next one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = DEFAULT_TABLE,
        busy_timeout: float = 5.0,
        sweep_interval: float = 60.0,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(f"table name {table!r}: use letters, digits and _")
        if sqlite3.sqlite_version_info < _MIN_VERSION:
            raise ConfigurationError(
                f"SyncSQLiteStore needs SQLite 3.24 or newer; Python links {sqlite3.sqlite_version}"
            )
        self._path = os.fspath(path)
        self._where = repr(self._path)
        self._errors = _errors(self._path)
        self._table = table
        self._statements: dict[str, str] = {}  # each template with the table name in it
        self._busy_timeout = busy_timeout
        self._sweep_interval = sweep_interval
        # The thread of sweeps, checkpoints and (async face) every operation.
        self._executor: ThreadPoolExecutor | None = _worker()
        self._generation = generation()
        # A connection per thread that runs operations: the worker thread alone
        # in the async face, each request thread in the sync face.
        self._connections: PerThread[sqlite3.Connection] = PerThread(sqlite3.Connection.close)
        self._next_sweep = 0.0  # time.monotonic(); 0: the first operation sweeps
        self._closed = False
        self._waiters: Waiters[str] = Waiters()
        self._writer = threading.Lock()  # held by this process's write transaction
        self._on_loop = threading.local()  # .active: an operation runs on the loop's thread
        self._loop_writes = 0  # write transactions on the loop's thread since a checkpoint
        # watch_expired's report; until then (None) the sweeps return no keys
        self._report: Callable[[str], object] | None = None
        # the async face's reporting sweep: a task of the loop (see _queue_sweep)
        self._reporting = Background("sessionware-sqlite-sweep")

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        parts = url.parts
        if parts.netloc:
            raise url.error(
                "a SQLite URL has no host; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db (three slashes, then the path)"
            )
        path = unquote(parts.path[1:])  # as SQLAlchemy's: an absolute path has four slashes
        if not path:
            raise url.error("name the database file, e.g. sqlite:///sessions.db")
        if path == ":memory:" or path.startswith("file:"):
            raise url.error(
                "SyncSQLiteStore needs a file that every thread and process opens; "
                "for sessions in this process's memory use memory://"
            )
        return cls(path, **url.options(cls))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, table={self._table!r})"

    def setup(self) -> None:
        self._run("setup", self._setup)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            with self._errors.mapped("close", self._where):  # the worker may be sweeping
                run_on_thread(executor, self._close)
        finally:
            executor.shutdown(wait=False)

    def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        return self._run("acquire", self._acquire, key, lease_ttl)

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        self._run("commit", self._fenced, COMMIT, lease, {"data": data, "ttl": ttl})
        self._waiters.wake(lease.key)

    def release(
        self, lease: Lease, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> None:
        params = {"ttl": ttl, "refresh_after": refresh_after}
        self._run("release", self._fenced, RELEASE, lease, params)
        self._waiters.wake(lease.key)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        self._run("renew", self._fenced, RENEW, lease, {"lease_ttl": lease_ttl})

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        return self._run("read", self._read, key, ttl, refresh_after)

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        return self._run("create", self._create, key, data, ttl, absolute_ttl)

    def delete(self, lease: Lease) -> None:
        self._run("delete", self._fenced, DELETE, lease, {})
        self._waiters.wake(lease.key)

    def discard(self, key: str) -> bool:
        removed = self._run("discard", self._discard, key)
        self._waiters.wake(key)
        return removed

    def inspect(self, key: str) -> Record | None:
        return self._run("inspect", self._inspect, key)

    def scan(self, *, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        after = ""
        while True:
            batch = self._run("scan", self._scan_batch, after, batch_size)
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1].key

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired row; returns how many this call deleted.

        Batch by batch, each batch its own short write transaction, so the
        write lock is never held long and other operations run between batches;
        ``progress`` hears the count of each batch that deleted any. Once
        :meth:`watch_expired` was called, the sessions of each batch are
        reported after it committed, before the next batch."""
        purged = 0
        reporting = self._report is not None
        while True:
            swept, expired = self._run("purge", self._sweep_batch, reporting)
            purged += swept
            if progress is not None and swept:
                progress(swept)
            report_each(self._report, expired)
            if swept < _SWEEP_BATCH:
                return purged

    def watch_expired(self, report: Callable[[str], object]) -> bool:
        """Report each session this store's sweeps remove from now on, and
        those :meth:`purge_expired` removes: exactly, since expired rows leave
        only by a sweep, and each row by the one statement (of whichever
        process) that deleted it, which returns its key.

        A session is reported when a sweep removes it, not at its deadline:
        up to ``sweep_interval`` after it, once an operation starts the sweep
        (never if the key is created again first). Reports come after the batch
        committed, with no lock held, one at a time: awaited on the
        event loop (async face) or called on the thread that swept (sync face:
        the store's worker thread, or the caller of ``purge_expired``). A
        report that raises is logged. Rows removed by a process that does not
        watch are not reported. Returns ``True``."""
        self._report = report
        return True

    def wait(self, key: str, timeout: float, attempt: int) -> None:
        """Wait for a release in this process, or the backoff delay (which finds
        releases in other processes), or ``timeout``: whichever comes first."""
        self._waiters.wait(key, min(timeout, backoff_delay(attempt)))

    def _run(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        """Run one operation: on the loop's thread if it needs no wait, else on
        the worker thread (async face), or on the calling thread (sync face).
        Then queue a sweep if one is due."""
        executor = self._current_executor()
        try:
            with self._errors.mapped(op, self._where):
                if not IS_SYNC:
                    done, answer = self._on_loop_thread(fn, *args)
                    if done:
                        return cast(_T, answer)
                result: _T = run_blocking(executor, self._until_not_busy, fn, *args)
                return result
        finally:
            self._sweep_if_due()

    def _on_loop_thread(self, fn: Callable[..., _T], *args: Any) -> tuple[bool, _T | None]:
        """Try ``fn(*args)`` once, here, without waiting for any lock: ``(True,
        result)``, or ``(False, None)`` when a write lock is held (this
        process's or SQLite's), so it must run where it may wait. The failed
        try changed nothing: each operation is one transaction, rolled back."""
        self._on_loop.active = True
        _FORKS.enter()
        try:
            return True, fn(*args)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                return False, None
            raise
        finally:
            _FORKS.leave()
            self._on_loop.active = False

    def _current_executor(self) -> ThreadPoolExecutor:
        """This process's worker thread; a closed store stays closed, even forked."""
        if self._executor is None:
            raise StoreError(f"{self!r} is closed")
        if self._generation != generation():
            self._after_fork()
        return self._executor

    def _sweep_if_due(self) -> None:
        """Queue a background sweep if one is due. Checked by every operation,
        since traffic to any one of them may stop. Two threads may find it due
        at once: one extra batch, harmless."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_interval
            self._queue_sweep()

    def _queue_sweep(self) -> None:
        """Hand a sweep to the worker thread; once watch_expired was called,
        on the async face, start the task that runs the sweep's batches there
        and reports on the loop (this runs on the loop then: only _run calls
        it, the worker thread's unwatched sweep never does)."""
        executor = self._executor
        if executor is None:
            return
        if self._report is not None and not IS_SYNC:
            self._reporting.start(self._reporting_sweep)
            return
        job = self._background_sweep if self._report is None else self._reporting_sweep
        with contextlib.suppress(RuntimeError):  # shut down by close meanwhile
            executor.submit(job)

    def _after_fork(self) -> None:
        """A forked child (gunicorn, multiprocessing) inherits the executor but
        not its thread, nor may it share the parent's connections (PerThread
        opens new ones): start afresh."""
        self._generation = generation()
        self._executor = _worker()
        self._waiters.clear()
        self._writer = threading.Lock()

    # -- the worker thread ------------------------------------------------------

    def _sql(self, template: str) -> str:
        sql = self._statements.get(template)
        if sql is None:
            sql = self._statements[template] = template.format(table=self._table)
        return sql

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get(self._open)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: sqlite3 opens no transactions of its own; each
        # write says BEGIN IMMEDIATE itself. timeout=0: a held write lock fails
        # at once, and _until_not_busy waits (SQLite's own busy handler sleeps
        # a millisecond or more between tries, many times an operation's
        # length). check_same_thread=False: closed by close() from another
        # thread, or where its thread ends (PerThread).
        db = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
        on_loop = getattr(self._on_loop, "active", False)
        try:
            for pragma in (*PRAGMAS, *LOOP_PRAGMAS) if on_loop else PRAGMAS:
                db.execute(pragma)
        except BaseException:
            db.close()
            raise
        return db

    def _until_not_busy(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, tried again while another connection holds the write
        lock (an operation is one transaction, rolled back when it finds the
        lock held, so trying again is safe), with short jittered sleeps, for up
        to ``busy_timeout`` or what is left of the store call (the sync face,
        where nothing else can cut a blocking call off), whichever is less."""
        deadline = time.monotonic() + time_budget(self._busy_timeout)
        for attempt in itertools.count():
            _FORKS.enter()
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                remaining = deadline - time.monotonic()
                if not _is_busy(exc) or remaining <= 0:
                    raise
            finally:
                _FORKS.leave()
            time.sleep(min(remaining, backoff_delay(attempt, base=_BUSY_BASE, cap=_BUSY_CAP)))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _write(self, db: sqlite3.Connection) -> Iterator[float]:
        """One write transaction; yields the time, read once the lock is held.

        The threads of this process take turns at ``_writer`` first: woken
        at once when the one before them is done, they queue for SQLite's
        write lock instead of polling for it (the sync face's request threads;
        the async face has one thread that writes). Other processes are
        still waited for by polling (:meth:`_until_not_busy`). On the loop's
        thread the wait is cut short at ``_LOOP_WRITER_WAIT``: enough for the
        worker thread's write (tens of microseconds), so that a write handed
        to the worker does not make the loop hand on the writes that come
        while it runs, one after another; a longer hold (a checkpoint) fails."""
        on_loop = getattr(self._on_loop, "active", False)
        left = time_left()
        wait = _LOOP_WRITER_WAIT if on_loop else self._busy_timeout if left is None else left
        if not self._writer.acquire(timeout=wait):
            raise sqlite3.OperationalError("database is locked (by this process's writers)")
        try:
            db.execute(BEGIN)
            try:
                yield time.time()
                db.execute(COMMIT_TRANSACTION)
            finally:
                if db.in_transaction:
                    db.rollback()
        finally:
            self._writer.release()
        if on_loop:
            self._wrote_on_loop()

    def _wrote_on_loop(self) -> None:
        """Count a write transaction of the loop's thread; queue a checkpoint
        on the worker thread after every ``_CHECKPOINT_EVERY``."""
        self._loop_writes += 1
        if self._loop_writes >= _CHECKPOINT_EVERY:
            self._loop_writes = 0
            executor = self._executor
            if executor is not None:
                with contextlib.suppress(RuntimeError):  # shut down by close meanwhile
                    executor.submit(self._background_checkpoint)

    def _background_checkpoint(self) -> None:
        if self._closed:
            return
        try:
            with self._errors.mapped("checkpoint", self._where):
                self._until_not_busy(self._checkpoint)
        except StoreError as exc:
            logger.warning(
                "could not checkpoint the WAL (tried again after %s more writes): %s",
                _CHECKPOINT_EVERY,
                exc,
            )

    def _checkpoint(self) -> None:
        """Checkpoint while the loop's thread goes on writing, and, once the
        WAL has grown past ``_WAL_RESTART_BYTES``, with this process's writers
        held off (they queue on the worker thread meanwhile; the loop itself
        never waits): only a checkpoint that no write races past lets the next
        write start the WAL over. The first kind copies nearly everything, so
        the second has little left to copy."""
        db = self._connection()
        db.execute(CHECKPOINT)
        try:
            wal_bytes = os.path.getsize(self._path + "-wal")
        except OSError:
            return  # no WAL (yet): nothing to start over
        if wal_bytes < _WAL_RESTART_BYTES:
            return
        if not self._writer.acquire(timeout=self._busy_timeout):
            raise sqlite3.OperationalError("database is locked (by this process's writers)")
        try:
            db.execute(CHECKPOINT)
        finally:
            self._writer.release()

    def _setup(self) -> None:
        db = self._connection()
        # No BEGIN IMMEDIATE: each statement is atomic, takes the write lock only
        # when it has something to create, and a process that loses the race
        # re-reads the schema and finds nothing to do. So setup passes a held lock.
        db.execute(self._sql(CREATE_TABLE))
        db.execute(self._sql(CREATE_INDEX))

    def _close(self) -> None:
        self._closed = True
        _FORKS.enter()
        try:
            self._connections.close_all()
        finally:
            _FORKS.leave()

    def _acquire(self, key: str, lease_ttl: float) -> Lease | Locked | None:
        db = self._connection()
        now = time.time()
        locked_until = self._locked_until(db, key, now)
        if locked_until is None or locked_until > now:
            return _refusal(locked_until, now)
        with self._write(db) as now:
            params = {"key": key, "now": now, "lease_ttl": lease_ttl}
            row = self._take(db, params)
            if row is not None:
                return Lease(key, row[0], row[1])
            # Another process took it (or deleted it) since the read above.
            locked_until = self._locked_until(db, key, now)
        return _refusal(locked_until, now)

    def _take(self, db: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, bytes] | None:
        if _RETURNING:
            rows = db.execute(self._sql(ACQUIRE_RETURNING), params).fetchall()
        elif db.execute(self._sql(ACQUIRE), params).rowcount:
            rows = db.execute(self._sql(LOAD), params).fetchall()
        else:
            rows = []
        return (rows[0][0], rows[0][1]) if rows else None

    def _locked_until(self, db: sqlite3.Connection, key: str, now: float) -> float | None:
        rows = db.execute(self._sql(LOCK_STATE), {"key": key, "now": now}).fetchall()
        return float(rows[0][0]) if rows else None

    def _fenced(self, template: str, lease: Lease, params: dict[str, Any]) -> None:
        db = self._connection()
        with self._write(db) as now:
            params = {**params, "key": lease.key, "token": lease.token, "now": now}
            changed = db.execute(self._sql(template), params).rowcount
        if changed == 0:
            raise lease_lost(lease)

    def _read(self, key: str, ttl: float | None, refresh_after: float) -> bytes | None:
        db = self._connection()
        params = {"key": key, "now": time.time(), "ttl": ttl, "refresh_after": refresh_after}
        rows = db.execute(self._sql(READ), params).fetchall()
        if not rows:
            return None
        data, slide_due = rows[0]
        if slide_due:
            with self._write(db) as now:
                db.execute(self._sql(TOUCH), {**params, "now": now})
        return bytes(data)

    def _create(self, key: str, data: bytes, ttl: float, absolute_ttl: float | None) -> bool:
        db = self._connection()
        with self._write(db) as now:
            absolute = None if absolute_ttl is None else now + absolute_ttl
            params = {
                "key": key,
                "data": data,
                "token": _first_token(now),
                "now": now,
                "ttl": ttl,
                "absolute": absolute,
            }
            return db.execute(self._sql(CREATE), params).rowcount == 1

    def _discard(self, key: str) -> bool:
        db = self._connection()
        with self._write(db) as now:
            return db.execute(self._sql(DISCARD), {"key": key, "now": now}).rowcount == 1

    def _inspect(self, key: str) -> Record | None:
        rows = (
            self._connection()
            .execute(self._sql(INSPECT), {"key": key, "now": time.time()})
            .fetchall()
        )
        if not rows:
            return None
        data, *times = rows[0]
        return Record(key, bytes(data), *times)

    def _scan_batch(self, after: str, limit: int) -> list[Record]:
        rows = (
            self._connection()
            .execute(self._sql(SCAN), {"after": after, "now": time.time(), "limit": limit})
            .fetchall()
        )
        return [Record(key, bytes(data), *times) for key, data, *times in rows]

    def _sweep_batch(self, reporting: bool) -> tuple[int, list[str]]:
        """One batch of expired rows deleted: how many, and (``reporting``, or
        once watch_expired was called, as seen under the write lock) the keys
        to report, in a write transaction committed on return."""
        db = self._connection()
        with self._write(db) as now:
            return self._delete_expired(db, now, reporting or self._report is not None)

    def _delete_expired(
        self, db: sqlite3.Connection, now: float, reporting: bool
    ) -> tuple[int, list[str]]:
        """:meth:`_sweep_batch`'s statements, in the write transaction it holds."""
        params = {"now": now, "limit": _SWEEP_BATCH}
        if not reporting:
            return int(db.execute(self._sql(SWEEP), params).rowcount), []
        if _RETURNING:
            rows = db.execute(self._sql(SWEEP_REPORTING), params).fetchall()
        else:
            batch = db.execute(self._sql(EXPIRED_BATCH), params).fetchall()
            db.executemany(self._sql(SWEEP_KEY), [{"key": key} for key, _ in batch])
            rows = [(reported,) for _, reported in batch]
        return len(rows), [key for (key,) in rows if key is not None]

    def _reporting_sweep(self) -> None:
        """A background sweep once watch_expired was called: batches on the
        worker thread until one is not full, the keys of each reported before
        the next. On the async face a task of the loop, which awaits each
        batch (queued behind the operations waiting for the worker, as
        :meth:`_background_sweep`'s) and then the reports; on the sync face it
        runs on the worker thread itself, batches and reports alike."""
        try:
            while not self._closed and (executor := self._executor) is not None:
                try:
                    with self._errors.mapped("purge", self._where):
                        swept, expired = run_blocking(
                            executor, self._until_not_busy, self._sweep_batch, True
                        )
                except StoreError as exc:
                    logger.warning(
                        "could not sweep expired sessions (next try in %ss): %s",
                        self._sweep_interval,
                        exc,
                    )
                    return
                report_each(self._report, expired)
                if swept < _SWEEP_BATCH:
                    return
        finally:
            self._reporting.finished()

    def _background_sweep(self) -> None:
        """One batch of a background sweep. A full batch means a backlog: the
        next batch queues behind the operations waiting now, so they wait for
        one batch at most, and the backlog drains without further traffic."""
        if self._closed:
            return  # queued before close, run after it: do not reopen the file
        try:
            with self._errors.mapped("purge", self._where):
                swept = self._until_not_busy(self._unreported_batch)
        except StoreError as exc:
            logger.warning(
                "could not sweep expired sessions (next try in %ss): %s", self._sweep_interval, exc
            )
            return
        if swept == _SWEEP_BATCH and self._report is None:
            self._queue_sweep()
        elif swept is None or swept == _SWEEP_BATCH:
            # watch_expired came since: the next operation starts a sweep that
            # reports (this thread cannot start the async face's task)
            self._next_sweep = 0.0

    def _unreported_batch(self) -> int | None:
        """A batch of a sweep queued before watch_expired, which reports
        nothing: how many it deleted, or ``None``, deleting nothing, once
        watch_expired was called. Checked under the write lock: a batch that
        waited for it long (the lock held by a request) would otherwise
        delete, unreported, rows that expired after the watch began."""
        db = self._connection()
        with self._write(db) as now:
            if self._report is not None:
                return None
            return self._delete_expired(db, now, False)[0]
