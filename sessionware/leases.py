"""Keeping the leases of running requests alive.

A lease is short (seconds) so that a crashed holder's lock frees itself soon;
a request that runs longer must therefore renew it. One background task per
process renews every lease that has lived a third of its term, instead of one
timer task per request: most requests end long before their first renewal and
so cost nothing here but a dict insert and delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sessionware.exceptions import LeaseLost, StoreError
from sessionware.stores.base import Lease, Store

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("sessionware")


class HeldLease:
    """A lease a request holds, with when it was last renewed (loop time)."""

    __slots__ = ("lease", "lost", "renewed_at")

    def __init__(self, lease: Lease, renewed_at: float) -> None:
        self.lease = lease
        self.renewed_at = renewed_at
        self.lost = False


class LeaseKeeper:
    """Renews tracked leases every ``lease_ttl / 3`` until they are untracked."""

    def __init__(self, store: Store, lease_ttl: float,
                 guard: Callable[[Awaitable[None]], Awaitable[None]]) -> None:
        self._store = store
        self._lease_ttl = lease_ttl
        self._period = lease_ttl / 3
        self._guard = guard  # the core's timeout and error translation for store calls
        self._held: dict[int, HeldLease] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, lease: Lease) -> HeldLease:
        loop = asyncio.get_running_loop()
        held = HeldLease(lease, loop.time())
        self._held[id(held)] = held
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="sessionware-lease-keeper")
        return held

    def untrack(self, held: HeldLease) -> None:
        self._held.pop(id(held), None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(self._period / 2)
            due = [h for h in self._held.values() if loop.time() - h.renewed_at >= self._period]
            await asyncio.gather(*(self._renew(h, loop.time()) for h in due))
        self._task = None  # checked and cleared in one step: track() starts a new one

    async def _renew(self, held: HeldLease, now: float) -> None:
        try:
            await self._guard(self._store.renew(held.lease, lease_ttl=self._lease_ttl))
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
