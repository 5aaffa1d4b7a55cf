"""Watching a store's expiries (``watch_expired``) on either face, for the
tests of the stores that report them exactly (SQLite, PostgreSQL).

The async face awaits a coroutine function on the event loop; the sync face
(behind :class:`~tests.support.faces.ThreadedStore`) calls a plain function on the
thread that purged. Either way :class:`Reports` records each key with the
thread that heard it, and sets an event at each, which :meth:`Reports.heard`
awaits with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable

from sessionware.stores import Store
from tests.support.faces import ThreadedStore

DEADLINE = 15.0  # bound on a wait for a report: generous, never hoped for
TICK = 0.05  # seconds between the operations that start the purges of a wait


class Reports:
    """The keys a store reported expired, in order, and the thread of each.

    ``failing``: the first that many reports raise (after being recorded)."""

    def __init__(self, *, failing: int = 0) -> None:
        self.failing = failing
        self.keys: list[str] = []
        self.threads: list[str] = []
        self.on_loop: list[bool] = []  # per report: awaited on the test's loop
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread().name
        self._heard = asyncio.Event()  # set at each report

    def hear(self, key: str) -> None:
        self.keys.append(key)
        self.threads.append(threading.current_thread().name)
        self._loop.call_soon_threadsafe(self._heard.set)
        if len(self.keys) <= self.failing:
            raise RuntimeError(f"report {len(self.keys)} fails, as the test asked")

    async def heard(self, count: int,
                    traffic: Callable[[], Awaitable[object]] | None = None) -> None:
        """Until ``count`` reports came in all (or fail at DEADLINE).

        ``traffic``: an operation, made again at every ``TICK`` until then,
        for a store whose purges only operations start."""
        deadline = time.monotonic() + DEADLINE
        while len(self.keys) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.keys)} of {count} reports in "
                                     f"{DEADLINE}s: {self.keys}")
            self._heard.clear()
            if traffic is not None:
                await traffic()
            if len(self.keys) < count:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._heard.wait(), min(left, TICK))

    @property
    def loop_thread(self) -> str:
        return self._loop_thread


async def watch(store: Store, reports: Reports) -> None:
    """Have ``store`` (either face) report its expiries to ``reports``."""
    if isinstance(store, ThreadedStore):
        watching = await asyncio.to_thread(store.inner.watch_expired, reports.hear)
    else:
        loop = asyncio.get_running_loop()

        async def report(key: str) -> None:
            reports.on_loop.append(asyncio.get_running_loop() is loop)
            reports.hear(key)

        watching = await store.watch_expired(report)
    assert watching is True
