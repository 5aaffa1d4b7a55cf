"""The two faces of every store, for suites written once and run on both.

Every store has an async face (``SQLiteStore``, for ASGI) and a generated
blocking twin (``SyncSQLiteStore``, for WSGI). A test or fixture that asks for
``face`` runs once per face: ``tests/conftest.py`` parametrizes it with
:data:`FACES`, or with the faces a ``@pytest.mark.faces("async")`` marker names
(for what only one face has: a cancelled task, a WebSocket).

The suites stay async. On the sync face, the contract suite drives the
blocking store through :class:`ThreadedStore`: each call runs on a real thread,
so ``asyncio.gather`` in a test is real thread concurrency against the blocking
face, as a threaded WSGI server's request threads are.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from sessionware._async.stores.base import SCAN_BATCH
from sessionware.stores import Lease, Locked, Record, Store, SyncStore

FACES = ("async", "sync")


def sync_face(store: Store) -> SyncStore:
    """The blocking twin the WSGI middleware would make of ``store``."""
    twin = store.sync()
    assert isinstance(twin, SyncStore), twin
    assert type(twin).__name__ == f"Sync{type(store).__name__}", twin
    return twin


class ThreadedStore(Store):
    """A store's blocking face behind the async Store methods: every call runs
    the blocking method on one of ``threads`` real threads.

    Enough threads that calls blocked in ``wait`` never starve the call that
    would wake them."""

    def __init__(self, inner: SyncStore, threads: int = 32) -> None:
        self.inner = inner
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sync-face")

    def __repr__(self) -> str:
        return f"ThreadedStore({self.inner!r})"

    async def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.inner, operation)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(method, *args, **kwargs))

    async def setup(self) -> None:
        await self._call("setup")

    async def aclose(self) -> None:
        try:
            await self._call("close")
        finally:
            self._pool.shutdown(wait=True)

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        got: Lease | Locked | None = await self._call("acquire", key, lease_ttl=lease_ttl)
        return got

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        await self._call("commit", lease, data, ttl=ttl)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._call("release", lease, ttl=ttl, refresh_after=refresh_after)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._call("renew", lease, lease_ttl=lease_ttl)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        data: bytes | None = await self._call("read", key, ttl=ttl,
                                              refresh_after=refresh_after)
        return data

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        created: bool = await self._call("create", key, data, ttl=ttl,
                                         absolute_ttl=absolute_ttl)
        return created

    async def delete(self, lease: Lease) -> None:
        await self._call("delete", lease)

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        purged: int = await self._call("purge_expired", progress=progress)
        return purged

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._call("wait", key, timeout, attempt)

    async def discard(self, key: str) -> bool:
        removed: bool = await self._call("discard", key)
        return removed

    async def inspect(self, key: str) -> Record | None:
        record: Record | None = await self._call("inspect", key)
        return record

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        # the blocking generator, one batch per call on a thread
        batches = self.inner.scan(batch_size=batch_size)
        loop = asyncio.get_running_loop()
        while (batch := await loop.run_in_executor(self._pool, next, batches, None)) is not None:
            yield batch


@asynccontextmanager
async def on_face(store: Store, face: str) -> AsyncIterator[Store]:
    """``store`` set up on ``face``, as async Store methods; closed at the end.

    On the sync face, ``store`` itself is never used: its twin is."""
    driven = store if face == "async" else ThreadedStore(sync_face(store))
    async with driven:
        yield driven
