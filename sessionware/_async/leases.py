"""Keeping the leases of running requests alive.

A lease is short (seconds) so that a crashed holder's lock frees itself soon;
a request that runs longer must therefore renew it. One background job per
process (a task, or in the sync face a thread) renews every lease that has
lived a third of its term, instead of one timer per request: most requests end
long before their first renewal and so cost nothing here but a dict insert and
delete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from sessionware._async.io.primitives import Background, ThreadLock, sleep
from sessionware._async.stores.base import Lease, Store
from sessionware.exceptions import LeaseLost, StoreError

__all__ = ["HeldLease", "LeaseKeeper"]

logger = logging.getLogger("sessionware")


class HeldLease:
    """A lease a request holds, with when it was last renewed (monotonic time)."""

    __slots__ = ("lease", "lost", "renewed_at")

    def __init__(self, lease: Lease, renewed_at: float) -> None:
        self.lease = lease
        self.renewed_at = renewed_at
        self.lost = False


class LeaseKeeper:
    """Renews tracked leases every ``lease_ttl / 3`` until they are untracked."""

    def __init__(self, store: Store, lease_ttl: float,
                 guard: Callable[..., Awaitable[None]]) -> None:
        self._store = store
        self._lease_ttl = lease_ttl
        self._period = lease_ttl / 3
        self._guard = guard  # the core's timeout and error translation for store calls
        self._held: dict[int, HeldLease] = {}
        self._lock = ThreadLock()
        self._renewer = Background("sessionware-lease-keeper")

    def track(self, lease: Lease) -> HeldLease:
        held = HeldLease(lease, time.monotonic())
        with self._lock:
            self._held[id(held)] = held
            self._renewer.start(self._run)
        return held

    def untrack(self, held: HeldLease) -> None:
        with self._lock:
            self._held.pop(id(held), None)

    async def _run(self) -> None:
        while True:
            await sleep(self._period / 2)
            with self._lock:
                if not self._held:
                    self._renewer.finished()  # under the lock: track() starts a new one
                    return
                now = time.monotonic()
                due = [h for h in self._held.values() if now - h.renewed_at >= self._period]
            for held in due:  # one by one: renewals are rare, and a store that
                await self._renew(held, now)  # hangs for one hangs for all

    async def _renew(self, held: HeldLease, now: float) -> None:
        try:
            await self._guard(self._store.renew, held.lease, lease_ttl=self._lease_ttl)
        except LeaseLost:
            # Untracked meanwhile: the request ended the lease itself (its commit
            # ran before this renewal), so nothing was lost.
            if self._tracks(held):
                held.lost = True
                self.untrack(held)
                logger.warning("session lease lost while its request was running")
        except StoreError as exc:
            if self._tracks(held):  # an untracked lease is not renewed again
                logger.warning("could not renew a session lease (will retry): %s", exc)
        else:
            held.renewed_at = now

    def _tracks(self, held: HeldLease) -> bool:
        return self._held.get(id(held)) is held
