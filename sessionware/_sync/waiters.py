# Generated from sessionware/_async/waiters.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""Requests of this process waiting for a session's release, by key.

Every store keeps one: a request that finds a session locked waits here, and a
release in this process (or a store's notification of one elsewhere) wakes
every waiter of that key at once; each then re-checks with ``acquire``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sessionware._sync.io.primitives import Event, ThreadLock

__all__ = ["Waiters"]

K = TypeVar("K", bound=Hashable)


class Waiters(Generic[K]):
    """Wake-ups by key: :meth:`wait` until :meth:`wake` for that key, or a timeout."""

    def __init__(self) -> None:
        self._events: dict[K, set[Event]] = {}
        self._lock = ThreadLock()

    def wait(self, key: K, timeout: float, *, unless: Callable[[], bool] | None = None) -> None:
        """Return at the next :meth:`wake` of ``key``, or after ``timeout``.

        ``unless()``, asked once this waiter is registered, says whether there
        is nothing to wait for: a release that came between the caller's look
        and this wait woke nobody, and is seen here instead."""
        event = Event()
        with self._lock:
            self._events.setdefault(key, set()).add(event)
        try:
            if unless is None or not unless():
                event.wait(timeout)
        finally:
            with self._lock:
                events = self._events.get(key)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._events[key]

    def wake(self, key: K) -> None:
        with self._lock:
            events = self._events.pop(key, ())
        for event in events:
            event.set()

    def wake_all(self) -> None:
        with self._lock:
            everyone, self._events = self._events, {}
        for events in everyone.values():
            for event in events:
                event.set()

    def clear(self) -> None:
        """Forget every waiter (a forked child inherits the parent's)."""
        self._events = {}
        self._lock = ThreadLock()
