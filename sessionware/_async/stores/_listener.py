"""A store's listener: local waiters, and the one connection that wakes them
for releases in other processes.

A store that hears of releases elsewhere (Redis's SUBSCRIBE, PostgreSQL's
LISTEN, MongoDB's change stream) keeps one :class:`WakeupListener` per instance
(one per process and event loop). It holds what those stores share: the
local :class:`~sessionware._async.waiters.Waiters`, one background job (a task; a
daemon thread on the sync face) started at the first wait and stopped at
close, the job's reconnect loop with backoff, the flag that says whether
notifications arrive now (it decides how waiters pace their re-checks), and
the reset in a forked child. Each store's subclass says how to connect and
listen once, and what a message wakes.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import ClassVar, Generic, TypeVar

from sessionware._async.io.primitives import Background, Event, ThreadLock
from sessionware._async.waiters import Waiters
from sessionware._forks import generation
from sessionware.stores._errors import described
from sessionware.stores.answers import backoff_delay

__all__ = ["LISTEN_TICK", "RECHECK_BASE", "RECHECK_CAP", "STOP_TIMEOUT", "Run", "WakeupListener"]

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)

RECHECK_BASE = 0.05  # first re-check of a waiter while notifications arrive
RECHECK_CAP = 1.0  # longest sleep between re-checks while notifications arrive
LISTEN_TICK = 0.1  # longest a listener reads before it looks for a close()
STOP_TIMEOUT = 2.0  # longest a close() waits for the listener to end
_RECONNECT_BASE = 0.01  # first pause before the job connects again


class Run:
    """One run of the listener job: :meth:`WakeupListener.aclose` sets ``stop``,
    the job sets ``done`` as it ends."""

    __slots__ = ("done", "stop")

    def __init__(self) -> None:
        self.stop = Event()
        self.done = Event()


class WakeupListener(Generic[K]):
    """Local waiters by key, and one background job that listens for
    releases elsewhere and wakes them: started at the first :meth:`wait`
    (when the store may listen), reconnecting with backoff while the store
    is open, stopped at :meth:`aclose`.

    A subclass supplies :meth:`_listen_once` (connect, call
    :meth:`_began_listening` once notifications arrive and
    :meth:`_stopped_listening` when they no longer do, wake
    :attr:`waiters` by each message's key); ``connection`` names what it
    listens on in the log (its kind, and where)."""

    _LOST: ClassVar[tuple[type[Exception], ...]] = (Exception,)
    """What :meth:`_listen_once` raises when its connection is lost (the job
    reconnects); anything else ends the job."""

    def __init__(self, name: str, connection: str, *, enabled: bool = True) -> None:
        self.waiters: Waiters[K] = Waiters()
        self._connection = connection
        self._enabled = enabled
        self._lock = ThreadLock()
        self._job = Background(name)
        self._run: Run | None = None  # the job's, from its start to its end
        self._listening = False
        self._closed = False
        self._generation = generation()

    async def wait(self, key: K, timeout: float, attempt: int) -> None:
        """Until a wake-up of ``key``, ``timeout``, or the next re-check:
        after a jittered backoff of at most ``RECHECK_CAP`` while
        notifications arrive (a lost one, a crashed holder's lapsed lease),
        :meth:`_polling_delay` while they do not."""
        self._after_fork()
        may_listen = self._enabled and await self._may_listen()
        with self._lock:
            if may_listen:
                self._start()
            listening = self._listening
        if listening:
            delay = backoff_delay(attempt, base=RECHECK_BASE, cap=RECHECK_CAP)
        else:
            delay = self._polling_delay(attempt)
        await self.waiters.wait(key, min(timeout, delay))

    async def aclose(self) -> None:
        """Stop the job (it notices within a tick) and wake every waiter; no
        job starts after this."""
        self._after_fork()
        with self._lock:
            self._closed = True
            run = self._run
        if run is not None:
            run.stop.set()
            if not await run.done.wait(STOP_TIMEOUT):
                logger.debug("the session wake-up %s was still connecting when the store "
                             "closed; it ends once that attempt does", self._connection)
        self.waiters.wake_all()

    # -- what a store may change --------------------------------------------------

    async def _may_listen(self) -> bool:
        """Whether the deployment can notify (asked at each wait while enabled)."""
        return True

    def _polling_delay(self, attempt: int) -> float:
        """A waiter's re-check while no notification can arrive."""
        return backoff_delay(attempt)

    def _forked(self) -> None:
        """Forget the parent's job, connection and waiters (in a forked child)."""
        self._run = None
        self._listening = False
        self.waiters.clear()

    # -- what a store supplies ----------------------------------------------------

    async def _listen_once(self, run: Run) -> bool:
        """Connect and listen until ``run.stop`` is set or the connection
        ends; whether to listen again at once (else the next try is paced as
        after a failure). Raises one of ``_LOST`` when the connection is lost."""
        raise NotImplementedError

    # -- for _listen_once -----------------------------------------------------------

    def _began_listening(self) -> None:
        """Notifications arrive from now on: waiters re-check less often, and
        every one re-checks now, as releases may have gone unheard until now."""
        self._listening = True
        self.waiters.wake_all()

    def _stopped_listening(self) -> None:
        """Notifications no longer arrive: waiters poll, starting now."""
        self._listening = False
        self.waiters.wake_all()

    # -- the job ----------------------------------------------------------------------

    def _start(self) -> None:
        """Start the job unless it runs or the store closed (under the lock)."""
        if self._run is None and not self._closed:
            run = self._run = Run()
            self._job.start(lambda: self._listen(run))

    def _after_fork(self) -> None:
        """A forked child has none of its parent's listener: no job, and the
        connection stays the parent's (:meth:`_forked`)."""
        if self._generation != generation():
            self._generation = generation()
            self._forked()

    async def _listen(self, run: Run) -> None:
        failures = 0
        try:
            while not run.stop.is_set():
                try:
                    again = await self._listen_once(run)
                except self._LOST as exc:
                    if run.stop.is_set():
                        break
                    # a warning for the first loss of a row, then debug
                    logger.log(logging.DEBUG if failures else logging.WARNING,
                               "session wake-up %s lost: %s; connecting again",
                               self._connection, described(exc))
                    failures += 1
                else:
                    failures = 0 if again else failures + 1
                await run.stop.wait(backoff_delay(failures, base=_RECONNECT_BASE,
                                                  cap=RECHECK_CAP))
        finally:
            with self._lock:
                self._job.finished()
                if self._run is run:
                    self._run = None
            run.done.set()
