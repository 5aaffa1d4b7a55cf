"""How SyncSQLiteStore runs its blocking sqlite3 calls: each on the calling
thread (a request thread), on a connection of its own, waiting there for a
held write lock up to ``busy_timeout`` or what is left of the store call,
whichever is less; the writes asked for while one runs share the next
transaction (:class:`GroupCommit`).
The worker thread only sweeps. Hand-written, the
counterpart of :mod:`sessionware._async.io.sqlite_runner`, whose runner it
extends.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sessionware._async.io import sqlite_runner
from sessionware._async.io.sqlite_runner import CHECKPOINT_EVERY, Step, is_busy, is_error
from sessionware._forks import generation
from sessionware._sync.io.primitives import time_left
from sessionware._sync.stores.base import time_budget

__all__ = ["CHECKPOINT_EVERY", "GroupCommit", "Runner", "Step", "is_error"]

_T = TypeVar("_T")


class Runner(sqlite_runner.Runner):
    """The async face's runner, with no loop thread: nothing checkpoints by
    hand (each connection checkpoints itself, as SQLite does by default)."""

    def here(self, fn: Callable[..., _T], *args: Any) -> tuple[bool, _T | None]:
        """``(True, fn(*args))``, waiting here while the write lock is held."""
        return True, self.until_not_busy(fn, *args)

    def _budget(self) -> float:
        return time_budget(self.busy_timeout)

    def _writers_wait(self) -> float:
        left = time_left()
        return self.busy_timeout if left is None else left


class _Waiting:
    """A write that waits for the transaction before it to end."""

    __slots__ = ("answer", "args", "error", "lead", "ready", "settled", "step")

    def __init__(self, step: Step[Any], args: tuple[Any, ...]) -> None:
        self.step, self.args = step, args
        self.ready = threading.Event()  # set once settled, or told to lead
        self.lead = False
        self.settled = False  # done: ``answer`` or ``error``; else run again alone
        self.answer: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """The writes of this process's request threads: a write that meets no
    other runs at once, alone; the writes asked for while a transaction runs
    wait for it to end and then run in one write transaction, led by the
    first of them (group commit). Every caller returns only after the commit
    that holds its write. A group that finds the write lock held past the
    wait fails whole; one that fails otherwise is rolled back whole, and each
    of its writes runs again alone, where an error is its own."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._generation = generation()
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []  # the writes for the next transaction
        self._leading = False  # a thread runs a transaction of this group commit

    def write(self, step: Step[_T], *args: Any) -> _T:
        """``step(db, now, *args)`` in a write transaction, committed."""
        self._runner.worker()  # a closed store stays closed; a forked one starts over
        if self._generation != generation():
            self._generation, self._lock, self._queue = generation(), threading.Lock(), []
            self._leading = False
        me = _Waiting(step, args)
        with self._lock:
            follow, self._leading = self._leading, True
            if follow:
                self._queue.append(me)
        if follow:
            me.ready.wait()
            if me.lead:
                with self._lock:
                    group, self._queue = self._queue, []
                self._lead(group)
        else:
            self._lead([me])
        if me.error is not None:
            raise me.error
        if me.settled:
            return cast(_T, me.answer)
        answer: _T = self._runner.until_not_busy(self._runner.alone, step, *args)
        return answer

    def _lead(self, group: list[_Waiting]) -> None:
        """Run ``group`` in one transaction, settle each write, then hand the
        lead to the first write that queued meanwhile."""
        try:
            answers = self._runner.until_not_busy(
                self._runner.together, [(w.step, w.args) for w in group])
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                for waiting in group:
                    waiting.error, waiting.settled = exc, True
        except Exception:  # rolled back: each write alone reports its own error
            pass
        else:
            for waiting, answer in zip(group, answers, strict=True):
                waiting.answer, waiting.settled = answer, True
        finally:
            for waiting in group:
                waiting.ready.set()
            with self._lock:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].ready.set()
                else:
                    self._leading = False
