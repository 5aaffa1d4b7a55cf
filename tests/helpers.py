"""Test helpers shared by the middleware suites."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from sessionware.stores import Lease, Locked, Store


class CountingStore(Store):
    """A real store, wrapped to count the operations the core calls on it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def total(self) -> int:
        return sum(n for op, n in self.calls.items() if op not in ("setup", "wait"))

    async def setup(self) -> None:
        self.calls["setup"] += 1
        await self.inner.setup()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        self.calls["acquire"] += 1
        return await self.inner.acquire(key, lease_ttl=lease_ttl)

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        self.calls["commit"] += 1
        await self.inner.commit(lease, data, ttl=ttl)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        self.calls["release"] += 1
        await self.inner.release(lease, ttl=ttl, refresh_after=refresh_after)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        self.calls["renew"] += 1
        await self.inner.renew(lease, lease_ttl=lease_ttl)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        self.calls["read"] += 1
        return await self.inner.read(key, ttl=ttl, refresh_after=refresh_after)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        self.calls["create"] += 1
        return await self.inner.create(key, data, ttl=ttl, absolute_ttl=absolute_ttl)

    async def delete(self, lease: Lease) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(lease)

    async def purge_expired(self) -> int:
        self.calls["purge_expired"] += 1
        return await self.inner.purge_expired()

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        self.calls["wait"] += 1
        await self.inner.wait(key, timeout, attempt)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def session_cookie(response: httpx.Response, name: str = "session") -> str | None:
    """The value the response sets for the session cookie ('' if it expires it)."""
    for header in set_cookies(response):
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key == name:
            return value
    return None


def cookie_header(value: str, name: str = "session") -> dict[str, Any]:
    return {"cookie": f"{name}={value}".encode()}  # bytes: garbage may be non-ASCII
