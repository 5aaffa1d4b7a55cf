# Generated from sessionware/_async/stores/_purging.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""A store's background purge: at most one per interval per process.

SyncPostgresStore and SyncAzureTableStore remove expired records by purging now and
then from whichever process is serving, started by an operation that finds a
purge due (no process is special, none has to run a cron job). What they
share lives here: the schedule, jittered so that processes started together
do not purge in step, the one background job (a task; a daemon thread on the
sync face), and what a failed purge logs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from sessionware._sync.io.primitives import Background, ThreadLock
from sessionware.exceptions import StoreError

__all__ = ["PurgeSchedule"]


class PurgeSchedule:
    """Runs ``purge()`` in the background when :meth:`start_if_due` finds one
    due: the first call, then about every ``interval`` seconds (0.5x-1.5x).

    :param name: the background job's name (a thread's, on the sync face).
    :param purge: the store's ``purge_expired``.
    :param closed: whether the store closed: a failure then is its closing,
        not news.
    :param logger: the store's logger.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        purge: Callable[[], int],
        closed: Callable[[], bool],
        logger: logging.Logger,
    ) -> None:
        self.interval = interval
        self._logger = logger
        self._purge = purge
        self._closed = closed
        self._lock = ThreadLock()
        self._job = Background(name)
        self._next = 0.0  # time.monotonic(); 0: the first call purges

    @property
    def running(self) -> bool:
        """Whether a purge runs now (for tests that wait for it to end)."""
        return self._job.running

    def start_if_due(self) -> None:
        """Start a purge if one is due; a check of the clock otherwise, so
        every operation may call it."""
        now = time.monotonic()
        if now < self._next:
            return
        with self._lock:
            if now < self._next or self._closed():
                return
            self._next = now + self.interval * random.uniform(0.5, 1.5)
            self._job.start(self._run)

    def _run(self) -> None:
        try:
            purged = self._purge()
            if purged:
                self._logger.debug("purged %d expired sessions", purged)
        except StoreError as exc:
            if not self._closed():
                self._logger.warning(
                    "could not purge expired sessions (next try in about %ss): %s",
                    self.interval,
                    exc,
                )
        except Exception:
            if not self._closed():  # closed meanwhile, a driver may say anything
                self._logger.exception("the background purge failed")
        finally:
            with self._lock:
                self._job.finished()
