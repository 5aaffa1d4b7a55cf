"""How SQLiteStore's async face runs its blocking sqlite3 calls: on the event
loop's thread when a call need not wait for a lock, else on the store's worker
thread, which also sweeps and checkpoints the WAL. The writes of one loop turn
share one write transaction (:class:`GroupCommit`). The sync face
(:mod:`sessionware._sync.io.sqlite_runner`) runs each call on the calling
thread. Why, and what it costs: docs/stores/sqlite.md, "Several processes".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from sessionware._async.io.primitives import run_blocking
from sessionware._async.stores.base import time_budget
from sessionware._forks import ForkGate, generation
from sessionware._perthread import PerThread
from sessionware.exceptions import StoreError
from sessionware.stores._errors import ErrorTable
from sessionware.stores.answers import backoff_delay

__all__ = ["CHECKPOINT_EVERY", "GroupCommit", "Runner", "Step", "is_error"]

_T = TypeVar("_T")
# A write's statements: step(db, now, *args) runs them inside a write
# transaction that another write may share, and returns the write's answer.
# It must not commit, and it raises only for what fails the whole transaction.
Step = Callable[..., _T]

# Run on every new connection. 1 KiB pages (for a file with no table yet) make
# a write's WAL frame a quarter of the default's: about a fifth less CPU per
# acquire + commit. WAL persists in the file; NORMAL sync is safe in WAL mode
# (a power cut may lose the last commits, never corrupt the file).
PRAGMAS = ("PRAGMA page_size = 1024", "PRAGMA journal_mode = WAL",
           "PRAGMA synchronous = NORMAL")
# The loop's thread never checkpoints, which flushes to disk: the worker
# thread does, PASSIVE (waiting for nobody), every CHECKPOINT_EVERY store
# writes (a group commit's transaction counts each of its writes).
LOOP_PRAGMAS = ("PRAGMA wal_autocheckpoint = 0",)
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
# Opens every write: takes the write lock now (waiting up to the busy timeout),
# so no step inside fails half-way for want of it.
BEGIN = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"

CHECKPOINT_EVERY = 200  # about SQLite's own 1000-page default, at 2-5 pages a write
_LOOP_WRITER_WAIT = 0.001  # seconds the loop's thread waits for this process's writer
_WAL_RESTART_BYTES = 4 << 20  # a WAL this large is checkpointed with the writers held off
_BUSY_BASE = 0.0001  # seconds: the first wait for a held write lock, doubled per try
_BUSY_CAP = 0.005  # the longest one: a write transaction lasts tens of microseconds

# Every SQLite call passes it: a process never forks inside one (the child
# would inherit SQLite's in-process lock state of that call for ever).
_FORKS = ForkGate()


def is_error(exc: BaseException, codes: tuple[str, ...], messages: tuple[str, ...]) -> bool:
    """Whether sqlite3's ``exc`` has one of ``codes`` (by name prefix, so that
    extended codes match), or, on Python 3.10, which has no error codes on
    the exception, one of SQLite's ``messages``."""
    name: str | None = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(codes)
    return any(part in str(exc) for part in messages)


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    return is_error(exc, ("SQLITE_BUSY", "SQLITE_LOCKED"), ("locked", "busy"))


def _worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessionware-sqlite")


class Runner:
    """The threads that run ``owner``'s SQLite calls in this process, each on
    a connection of its own (:meth:`connection`), and the worker thread
    (:meth:`worker`) that runs what must wait. Made anew in a forked child
    (then ``on_fork`` is called); a closed runner stays closed."""

    def __init__(self, owner: object, path: str, busy_timeout: float, errors: ErrorTable,
                 log: logging.Logger, on_fork: Callable[[], object]) -> None:
        self._owner, self.path, self.busy_timeout = owner, path, busy_timeout
        self._errors, self._log, self._on_fork = errors, log, on_fork
        self.executor: ThreadPoolExecutor | None = _worker()  # None once closing
        self._generation = generation()
        self._connections: PerThread[sqlite3.Connection] = PerThread(sqlite3.Connection.close)
        self._writer = threading.Lock()  # held by this process's write transaction
        self._on_loop = threading.local()  # .active: a call runs on the loop's thread
        self._loop_writes = 0  # write transactions on the loop's thread since a checkpoint
        self.closed = False
        # Only setup() makes the file: before it, a missing file fails (a
        # mistyped path must not leave an empty database behind).
        self.may_create = False

    def worker(self) -> ThreadPoolExecutor:
        """This process's worker thread; a closed store stays closed, even forked."""
        if self.executor is None:
            raise StoreError(f"{self._owner!r} is closed")
        if self._generation != generation():
            # the executor is inherited, not its thread; the connections are
            # the parent's (PerThread opens new ones)
            self._generation = generation()
            self.executor, self._writer = _worker(), threading.Lock()
            self._on_fork()
        return self.executor

    def here(self, fn: Callable[..., _T], *args: Any) -> tuple[bool, _T | None]:
        """Try ``fn(*args)`` once on the loop's thread, without waiting for any
        lock: ``(True, result)``, or ``(False, None)`` when a write lock is held
        (this process's or SQLite's), so it must run on the worker. The failed
        try changed nothing: each call is one transaction, rolled back."""
        self._on_loop.active = True
        _FORKS.enter()
        try:
            return True, fn(*args)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False, None
            raise
        finally:
            _FORKS.leave()
            self._on_loop.active = False

    def until_not_busy(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, tried again with short jittered sleeps while another
        connection holds the write lock (it rolled back: trying again is safe),
        for up to ``busy_timeout`` or what is left of the store call."""
        deadline = time.monotonic() + self._budget()
        for attempt in itertools.count():
            _FORKS.enter()
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                remaining = deadline - time.monotonic()
                if not is_busy(exc) or remaining <= 0:
                    raise
            finally:
                _FORKS.leave()
            time.sleep(min(remaining, backoff_delay(attempt, base=_BUSY_BASE, cap=_BUSY_CAP)))
        raise AssertionError("unreachable")  # pragma: no cover

    def alone(self, step: Step[_T], *args: Any) -> _T:
        """``step`` in a write transaction of its own, on this thread."""
        db = self.connection()
        with self.write(db) as now:
            return step(db, now, *args)

    def together(self, writes: list[tuple[Step[Any], tuple[Any, ...]]]) -> list[Any]:
        """Each ``(step, args)`` of ``writes`` in order, in one write transaction;
        their answers once it committed."""
        db = self.connection()
        with self.write(db, len(writes)) as now:
            return [step(db, now, *args) for step, args in writes]

    def _budget(self) -> float:
        return time_budget(self.busy_timeout)

    def _writers_wait(self) -> float:
        """How long a call off the loop's thread waits for this process's writers."""
        return self.busy_timeout

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` on the worker thread, unless the store closed."""
        if self.executor is not None:
            with contextlib.suppress(RuntimeError):  # shut down by aclose meanwhile
                self.executor.submit(job)

    def close_connections(self) -> None:
        self.closed = True
        _FORKS.enter()
        try:
            self._connections.close_all()
        finally:
            _FORKS.leave()

    def connection(self) -> sqlite3.Connection:
        return self._connections.get(self._open)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: each write says BEGIN IMMEDIATE itself.
        # timeout=0: a held write lock fails at once, and until_not_busy waits
        # (SQLite's own busy handler sleeps a millisecond or more between
        # tries). check_same_thread=False: closed by close_connections from the
        # worker thread, or where its thread ends (PerThread).
        mode = "rwc" if self.may_create else "rw"
        db = sqlite3.connect(f"{Path(self.path).absolute().as_uri()}?mode={mode}", uri=True,
                             timeout=0, isolation_level=None, check_same_thread=False)
        on_loop = getattr(self._on_loop, "active", False)
        try:
            for pragma in (*PRAGMAS, *LOOP_PRAGMAS) if on_loop else PRAGMAS:
                db.execute(pragma)
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def write(self, db: sqlite3.Connection, writes: int = 1) -> Iterator[float]:
        """One write transaction (of ``writes`` store writes); yields the time,
        read once the lock is held.
        This process's threads queue at ``_writer`` first (docs/stores/sqlite.md);
        on the loop's thread only for ``_LOOP_WRITER_WAIT``."""
        on_loop = getattr(self._on_loop, "active", False)
        if not self._writer.acquire(timeout=_LOOP_WRITER_WAIT if on_loop
                                    else self._writers_wait()):
            raise sqlite3.OperationalError("database is locked (by this process's writers)")
        try:
            db.execute(BEGIN)
            try:
                yield time.time()
                db.execute(COMMIT)
            finally:
                if db.in_transaction:
                    db.rollback()
        finally:
            self._writer.release()
        if on_loop:
            self._loop_writes += writes
            if self._loop_writes >= CHECKPOINT_EVERY:
                self._loop_writes = 0
                self.submit(self._background_checkpoint)

    def _background_checkpoint(self) -> None:
        if self.closed:
            return
        try:
            with self._errors.mapped("checkpoint", repr(self.path)):
                self.until_not_busy(self._checkpoint)
        except StoreError as exc:
            self._log.warning("could not checkpoint the WAL (tried again after %s more "
                              "writes): %s", CHECKPOINT_EVERY, exc)

    def _checkpoint(self) -> None:
        """Checkpoint while the loop's thread goes on writing; once the WAL
        passed ``_WAL_RESTART_BYTES``, again with this process's writers held
        off, so that the next write starts the WAL over."""
        db = self.connection()
        db.execute(CHECKPOINT)
        try:
            wal_bytes = os.path.getsize(self.path + "-wal")
        except OSError:
            return  # no WAL (yet): nothing to start over
        if wal_bytes < _WAL_RESTART_BYTES:
            return
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise sqlite3.OperationalError("database is locked (by this process's writers)")
        try:
            db.execute(CHECKPOINT)
        finally:
            self._writer.release()


class _Pending:
    __slots__ = ("args", "future", "step")

    def __init__(self, step: Step[Any], args: tuple[Any, ...],
                 future: asyncio.Future[tuple[bool, Any]]) -> None:
        self.step, self.args, self.future = step, args, future


class GroupCommit:
    """The writes that the tasks of one event loop turn ask for, on the loop's
    thread: the turn's first write runs at once, alone (so a request that
    meets no other waits for no group); the rest wait for the turn's end and
    run then in one write transaction, one ``BEGIN IMMEDIATE`` and one
    ``COMMIT`` (one append to the WAL) for all of them. Every caller is
    answered only after the commit that holds its write. A group that finds
    the write lock held goes whole to the worker thread, which waits for the
    lock; one that fails is rolled back whole, and each of its writes runs
    again alone on the worker thread, where an error is its own."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        # per event loop: the writes waiting for this turn's end ([] once the
        # turn's first write ran)
        self._pending: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}

    async def write(self, step: Step[_T], *args: Any) -> _T:
        """``step(db, now, *args)`` in a write transaction, committed."""
        executor = self._runner.worker()
        loop = asyncio.get_running_loop()
        pending = self._pending.get(loop)
        if pending is None:
            self._pending[loop] = []
            loop.call_soon(self._commit, loop, executor)
            done, answer = self._runner.here(self._runner.alone, step, *args)
        else:
            future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
            pending.append(_Pending(step, args, future))
            done, answer = await future
        if done:
            return cast(_T, answer)
        return await run_blocking(executor, self._runner.until_not_busy,
                                  self._runner.alone, step, *args)

    def _commit(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        # A caller cancelled meanwhile gets no write: nobody would hear its answer.
        group = [p for p in self._pending.pop(loop, ()) if not p.future.cancelled()]
        if not group:
            return
        writes = [(p.step, p.args) for p in group]
        try:
            done, answers = self._runner.here(self._runner.together, writes)
        except Exception:
            _answer(group, None)
            return
        if done:
            _answer(group, answers)
            return
        on_worker = loop.run_in_executor(
            executor, self._runner.until_not_busy, self._runner.together, writes)
        on_worker.add_done_callback(functools.partial(_answer_from_worker, group))


def _answer(group: list[_Pending], answers: list[Any] | None) -> None:
    """Each write of ``group`` its answer, or (no ``answers``: the group was
    rolled back) the word to run again alone."""
    for index, pending in enumerate(group):
        if not pending.future.cancelled():
            pending.future.set_result((False, None) if answers is None
                                      else (True, answers[index]))


def _answer_from_worker(group: list[_Pending], ran: asyncio.Future[list[Any]]) -> None:
    """As :func:`_answer`, but a lock held past the wait fails every write: each
    waited as long as it would have alone."""
    error = None if ran.cancelled() else ran.exception()
    if error is not None and is_busy(error):
        for pending in group:
            if not pending.future.cancelled():
                pending.future.set_exception(error)
        return
    _answer(group, None if ran.cancelled() or error is not None else ran.result())
