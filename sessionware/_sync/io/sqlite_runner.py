"""How SyncSQLiteStore runs its blocking sqlite3 calls: each on the calling
thread (a request thread), on a connection of its own, waiting there for a
held write lock up to ``busy_timeout`` or what is left of the store call,
whichever is less; each write in a transaction of its own (:class:`GroupCommit`).
The worker thread only sweeps. Hand-written, the
counterpart of :mod:`sessionware._async.io.sqlite_runner`, whose runner it
extends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sessionware._async.io import sqlite_runner
from sessionware._async.io.sqlite_runner import CHECKPOINT_EVERY, Step, is_error
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


class GroupCommit:
    """The async face's group commit, with no loop turn to group by: each
    write runs alone, on the calling thread."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def write(self, step: Step[_T], *args: Any) -> _T:
        """``step(db, now, *args)`` in a write transaction of its own, committed."""
        answer: _T = self._runner.until_not_busy(self._runner.alone, step, *args)
        return answer
