"""The store contract: what every session store does, and nothing about HTTP.

A store keeps one record per session::

    key                  derived from the session id by the core (a hash, never the id)
    data                 the serialized session, bytes
    token                fencing token: grows at every acquire, never reused for that key
    locked_until         lease deadline of the current holder, or none
    locked_at            when that holder's acquire granted the lease, or none
    created_at           when create() wrote the record
    expires_at           idle deadline; sliding, capped by absolute_expires_at
    absolute_expires_at  hard deadline fixed at creation, or none

Rules every implementation keeps (``tests/support/store_contract.py`` checks each of them):

* Time is the store's own clock (the server's where there is a server), so leases
  do not depend on the clocks of the application processes.
* A record past ``expires_at`` or ``absolute_expires_at`` does not exist: every
  operation treats it as absent, and the store removes it eventually, by
  itself (whatever the traffic) and at once on :meth:`Store.purge_expired`.
* Every operation is atomic: it happens entirely or not at all. Fenced operations
  (``commit``, ``release``, ``renew``, ``delete``) act only while the record still
  carries the lease's token, and raise :class:`~sessionware.LeaseLost` otherwise,
  leaving the record untouched. A lease that merely lapsed, with no new holder,
  still holds the current token and may commit: fencing is by token, not by time.
  ``renew`` also needs the lease still held: once ``commit`` or ``release`` has
  ended it, the token is still current but nobody holds the lock any more.
* The operators' operations (:meth:`Store.discard`, :meth:`Store.inspect`,
  :meth:`Store.scan`) take no lock and never wait for one. They have
  defaults that raise :class:`NotImplementedError`, so a store written
  before them still serves sessions; the admin tools and user revocation
  need them.
* Driver errors are translated: a store raises only
  :class:`~sessionware.StoreError` subclasses (and ``LeaseLost``).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from sessionware._async.io.primitives import IS_SYNC, ThreadLock, sleep, time_left
from sessionware._forks import generation
from sessionware.exceptions import ConfigurationError, StoreError
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware._sync.stores import base as sync_base
    from sessionware.urls import StoreURL

__all__ = ["SCAN_BATCH", "Lease", "Locked", "PerProcess", "Record", "Store", "backoff_delay",
           "check_limits", "report_each", "retried", "time_budget"]

C = TypeVar("C")
T = TypeVar("T")

logger = logging.getLogger(__name__)

SCAN_BATCH = 500
"""Records per batch of :meth:`Store.scan` unless told: one statement or one
SCAN step each, short enough never to hold a backend's lock for long."""


class Store(abc.ABC):
    """Base class of session stores.

    Use a store as an async context manager, or call :meth:`setup` before use and
    :meth:`aclose` after. The middleware calls ``setup`` itself on first use.
    All durations are seconds, as floats.

    Every store of sessionware has two faces: this one, async, for ASGI, and a
    generated blocking twin (``SyncStore``, ``SyncSQLiteStore``, ...) for WSGI,
    which :meth:`sync` builds from the same arguments.
    """

    _arguments: tuple[tuple[Any, ...], dict[str, Any]]
    _twin: sync_base.SyncStore

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        store = super().__new__(cls)
        store._arguments = (args, kwargs)  # what sync() builds the twin with
        return store

    def sync(self) -> sync_base.SyncStore:
        """This store's blocking face: an instance of its generated sync twin
        (its class's name with ``Sync`` before it), built with the same arguments
        on the first call and the same one after (two WSGI apps given one
        store share it), for the WSGI middleware. A sync store returns itself."""
        if IS_SYNC:
            return self
        made: sync_base.SyncStore | None = self.__dict__.get("_twin")
        if made is None:
            made = self._twin = self._make_twin()
        return made

    def _make_twin(self) -> sync_base.SyncStore:
        from sessionware.stores import twin_of  # the registry, which imports the stores

        twin = twin_of(type(self))
        if twin is None:
            raise ConfigurationError(
                f"{type(self).__name__} has no blocking face: the WSGI middleware needs a store "
                "whose methods block (a SyncStore subclass)")
        args, kwargs = self._arguments
        return twin(*args, **kwargs)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """The store ``url`` names, for :func:`~sessionware.store_from_url`,
        which calls it for the URL schemes the registry gives this store."""
        raise url.error(f"{cls.__name__} takes no URL")

    async def __aenter__(self) -> Store:
        try:
            await self.setup()
        except BaseException:
            await self.aclose()  # __aexit__ is not called when __aenter__ raises
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def setup(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Create tables, indexes and scripts. Idempotent; safe to call concurrently
        from several processes."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and background tasks. The store is unusable after."""

    @abc.abstractmethod
    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        """Lock the session and load its data, in one atomic step.

        Returns a :class:`Lease` with a new token when the record is unlocked or its
        lease has lapsed (the lease then lasts ``lease_ttl``); :class:`Locked` while
        another lease is live; ``None`` when no such session exists (strict ids: the
        record is never created here).
        """

    @abc.abstractmethod
    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        """Write ``data``, set the idle expiry to ``ttl`` from now (capped by the
        absolute deadline) and clear the lock, atomically. Fenced."""

    @abc.abstractmethod
    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        """Clear the lock without writing data. Fenced.

        With ``ttl``, also slide the idle expiry to ``ttl`` from now, but only when
        that moves it by at least ``refresh_after`` seconds (a throttle that spares
        a write on every request).
        """

    @abc.abstractmethod
    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        """Extend the lease to ``lease_ttl`` from now.

        Fenced, and only while the lease is held: after commit/release it raises
        :class:`~sessionware.LeaseLost` and changes nothing. A renewal that lands
        after its request's own commit (queued behind a slow one) must not lock
        the session again, or the next request waits a whole ``lease_ttl`` for
        nobody. A lapsed lease with no newer holder is still held.
        """

    @abc.abstractmethod
    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        """The last committed data, or ``None``; takes no session lock and never
        waits for one (a due slide may briefly take the store's own write lock).

        ``ttl`` and ``refresh_after`` slide the idle expiry as in :meth:`release`.
        """

    @abc.abstractmethod
    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        """Insert a new, unlocked record; ``False`` (and nothing written) if a live
        record already has this key. ``absolute_ttl`` fixes the hard deadline."""

    @abc.abstractmethod
    async def delete(self, lease: Lease) -> None:
        """Remove the record. Fenced."""

    @abc.abstractmethod
    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Remove every expired record now; returns how many this call removed.

        A store that removes them batch by batch calls ``progress`` with the
        count of each batch as it goes (the command's progress bar); the
        counts add up to the answer.

        For operations (a cron job, an ops command): stores also remove expired
        records by themselves. Abstract, not a default that returns 0, so that
        every store states how its expired records go; a store whose backend
        deletes them itself returns 0 and says so. Safe to call while the store
        serves requests, and from several processes at once (each record is
        counted by the call that removed it).
        """

    async def discard(self, key: str) -> bool:
        """Remove the live record ``key`` whatever its lock, in one atomic step;
        ``True`` if a live record was removed, ``False`` if there was none.

        Not fenced: it is how an operator revokes a session a request may be
        holding. That holder's next fenced operation (commit, release, renew,
        delete) finds no record and raises :class:`~sessionware.LeaseLost`;
        it never writes the record back. Waiters for the lock are woken (they
        find the session gone). An expired record counts as absent.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement Store.discard(), which revoking a "
            "session needs")

    async def inspect(self, key: str) -> Record | None:
        """The live record ``key`` as a :class:`Record` (data, expiry, lock
        deadline), or ``None`` when absent or expired. One atomic read: takes
        no lock, waits for none and slides no expiry."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement Store.inspect(), which showing a "
            "session needs")

    def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        """Every live record, in batches of up to ``batch_size`` (never empty),
        as :class:`Record`: for statistics and operators' listings.

        Each batch is one short read (keyset pagination on the key, or the
        backend's cursor), taking no session lock; between batches the store
        serves requests as usual. A record live for the whole scan is yielded
        at least once; a record created, changed or removed meanwhile may or
        may not be, and a record's fields are those of the moment its batch
        was read. Stores whose cursor may return a key twice (Redis, while its
        table grows) say so; counts are then estimates.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement Store.scan(), which the statistics "
            "need")

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Have ``report(key)`` awaited for each session the store removes at
        its expiry, from now until :meth:`aclose`; ``False`` when the store
        cannot tell (this default), as most cannot without reading the
        whole store.

        For the ``expired`` event: the core calls it once, after
        :meth:`setup`, when the app has an ``on_event`` hook. A store that
        watches keeps these rules:

        * Each expiry is reported at most once, whichever of the processes
          watching one store hears it; none is reported while no process
          watches (notifications are not queued).
        * Records whose data begins with a NUL byte (the core's bookkeeping:
          tombstones and user indexes) are never reported.
        * ``report`` runs on the store's listener (a task; a thread on the
          sync face), so a slow one delays what else the listener carries.
        """
        return False

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        """Wait until the lock on ``key`` may have been released, or ``timeout``.

        May return early: the caller re-checks with :meth:`acquire`. ``attempt``
        counts the waits of this caller so far. This default polls with bounded,
        jittered backoff; stores with a notification channel override it to wake
        waiters at the release.
        """
        await sleep(min(timeout, backoff_delay(attempt)))


class PerProcess(Generic[C]):
    """A store's driver client (or pool) for this process, made at first use
    by ``make`` and closed once by ``close`` when the store closes; after
    that, :meth:`get` raises :class:`~sessionware.StoreError`.

    A forked child (gunicorn ``--preload``) never touches its parent's
    client, whose sockets and threads are the parent's: it makes its own,
    and keeps the parent's referenced and unused, so that no finalizer
    closes it here. ``place`` says where a client belongs (the process; a
    driver's async client also to its event loop); one made elsewhere is
    left alone and another made. ``first`` is this place's client, made
    already (by a constructor that checks its arguments so)."""

    def __init__(self, owner: object, make: Callable[[], Awaitable[C]],
                 close: Callable[[C], Awaitable[object]], *,
                 place: Callable[[], Hashable] = generation, first: C | None = None) -> None:
        self._owner = owner
        self._make = make
        self._close = close
        self._place = place
        self._lock = ThreadLock()
        self._client: C | None = first
        # (process generation, place) of the client
        self._home: tuple[int, Hashable] | None = (
            None if first is None else (generation(), place()))
        self._orphans: list[C] = []
        self.closed = False

    async def get(self) -> C:
        """This place's client, made if there is none yet."""
        home = (generation(), self._place())
        client = self._client
        if client is not None and self._home == home:
            return client
        self._check_open()
        made = await self._make()  # outside the lock: it may connect
        with self._lock:
            spare: C | None = made
            if self.closed:
                pass  # closed meanwhile: the one made goes
            elif self._client is not None and self._home == home:
                client = self._client  # another caller made one first
            else:
                if self._client is not None and self._home and self._home[0] != generation():
                    self._orphans.append(self._client)
                spare, client, self._client, self._home = None, made, made, home
        if spare is not None:
            await self._close(spare)
        self._check_open()
        assert client is not None
        return client

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"{self._owner!r} is closed")

    async def aclose(self) -> None:
        with self._lock:
            self.closed = True
            client, self._client = self._client, None
            ours = self._home is not None and self._home[0] == generation()
        if client is not None and ours:
            await self._close(client)


def time_budget(timeout: float) -> float:
    """How long one wait of a store call may take: ``timeout``, or what is
    left of the store call in progress if less (the sync face, where nothing
    else cuts a blocking call off; the core cuts the async face's calls off),
    never less than a millisecond (drivers read 0 as "no limit")."""
    left = time_left()
    return timeout if left is None else max(min(timeout, left), 0.001)


async def retried(call: Callable[[], Awaitable[T]], *, retry: Callable[[BaseException], bool],
                  timeout: float, base: float, cap: float) -> T:
    """``call()``'s answer, called again while it raises an error for which
    ``retry`` holds (one known not applied: throttled, never sent), after a
    jittered backoff (``base`` doubling up to ``cap``), as long as the next
    try starts within the :func:`time_budget` of ``timeout``; any other
    error, or the last, is raised."""
    deadline = time.monotonic() + time_budget(timeout)
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            delay = backoff_delay(attempt, base=base, cap=cap)
            if not retry(exc) or time.monotonic() + delay >= deadline:
                raise
        attempt += 1
        await sleep(delay)


def check_limits(timeout: float, max_connections: int) -> None:
    """A store constructor's check of its ``timeout`` and connection limit."""
    if timeout <= 0 or max_connections < 1:
        raise ConfigurationError("need timeout > 0 and max_connections >= 1")

async def report_each(report: Callable[[str], Awaitable[object]] | None,
                      keys: list[str]) -> None:
    """Hand each of ``keys``, removed at their expiry, to the ``report`` a
    store was given by :meth:`Store.watch_expired` (``None``: not watched).
    A report that raises is logged, and the next one is made all the same:
    a hook's failure never stops a purge."""
    if report is None:
        return
    for key in keys:
        try:
            await report(key)
        except Exception:
            logger.exception("the report of expired session %s… failed", key[:12])
