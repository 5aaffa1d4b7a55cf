"""The lease keeper against a real store: renewals that race with the end of
their request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sessionware._async.leases import LeaseKeeper
from sessionware.stores import Lease, Locked, MemoryStore
from tests.support.store_contract import LONG, acquire_lease, new_key

KEEPER_TTL = 0.3  # the keeper renews a lease a third of this after tracking it
WAIT = 5.0  # bound on every wait for the keeper: a failing test ends, never hangs


class QueuedRenewals(MemoryStore):
    """A MemoryStore whose renewals wait at a gate before they run, as a
    renewal queued behind a slow commit (on SQLite's worker thread, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.gate = asyncio.Event()

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        self.renewing.set()
        await self.gate.wait()
        await super().renew(lease, lease_ttl=lease_ttl)


async def unguarded(operation: Callable[..., Awaitable[None]], *args: Any,
                    **kwargs: Any) -> None:
    await operation(*args, **kwargs)


def keeper_task() -> asyncio.Task[object]:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "sessionware-lease-keeper"]
    return task


async def test_a_renewal_after_the_commit_neither_relocks_nor_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = QueuedRenewals()
    keeper = LeaseKeeper(store, KEEPER_TTL, unguarded)
    key = new_key()
    assert await store.create(key, b"v0", ttl=LONG)
    lease = await acquire_lease(store, key)
    held = keeper.track(lease)
    await asyncio.wait_for(store.renewing.wait(), WAIT)
    # The request ends as the core ends it: commit, then untrack.
    await store.commit(lease, b"v1", ttl=LONG)
    keeper.untrack(held)
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        store.gate.set()
        await asyncio.wait_for(keeper_task(), WAIT)
    assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_lease_lost_while_its_request_runs_still_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    keeper = LeaseKeeper(store, KEEPER_TTL, unguarded)
    key = new_key()
    assert await store.create(key, b"v0", ttl=LONG)
    held = keeper.track(await acquire_lease(store, key, lease_ttl=0.01))
    await asyncio.sleep(0.05)
    await acquire_lease(store, key)  # a newer holder took the lapsed lease over
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        await asyncio.wait_for(keeper_task(), WAIT)
    assert held.lost
    assert "session lease lost while its request was running" in caplog.text
    assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
