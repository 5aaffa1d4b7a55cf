"""Test helpers shared by the middleware suites."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from sessionware.stores import Store, SyncStore

# Every store operation the core calls (``close``/``aclose`` is not counted).
OPERATIONS = ("setup", "acquire", "commit", "release", "renew", "read", "create", "delete",
              "purge_expired", "wait")
_UNCOUNTED_IN_TOTAL = ("setup", "wait")


def _counted(operation: str) -> Callable[..., Any]:
    async def counted(self: CountingStore, *args: Any, **kwargs: Any) -> Any:
        self.calls[operation] += 1
        return await getattr(self.inner, operation)(*args, **kwargs)

    counted.__name__ = operation
    return counted


def _counted_sync(operation: str) -> Callable[..., Any]:
    def counted(self: SyncCountingStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.calls[operation] += 1
        return getattr(self.inner, operation)(*args, **kwargs)

    counted.__name__ = operation
    return counted


class CountingStore(Store):
    """A real store (async face), wrapped to count the operations the core calls on it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def total(self) -> int:
        return sum(n for op, n in self.calls.items() if op not in _UNCOUNTED_IN_TOTAL)

    async def aclose(self) -> None:
        await self.inner.aclose()

    setup = _counted("setup")
    acquire = _counted("acquire")
    commit = _counted("commit")
    release = _counted("release")
    renew = _counted("renew")
    read = _counted("read")
    create = _counted("create")
    delete = _counted("delete")
    purge_expired = _counted("purge_expired")
    wait = _counted("wait")


class SyncCountingStore(SyncStore):
    """The same for a store's sync face, as the WSGI middleware drives it: the
    calls of every request thread, each counted exactly once."""

    def __init__(self, inner: SyncStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def total(self) -> int:
        return sum(n for op, n in self.calls.items() if op not in _UNCOUNTED_IN_TOTAL)

    def close(self) -> None:
        self.inner.close()

    setup = _counted_sync("setup")
    acquire = _counted_sync("acquire")
    commit = _counted_sync("commit")
    release = _counted_sync("release")
    renew = _counted_sync("renew")
    read = _counted_sync("read")
    create = _counted_sync("create")
    delete = _counted_sync("delete")
    purge_expired = _counted_sync("purge_expired")
    wait = _counted_sync("wait")


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

