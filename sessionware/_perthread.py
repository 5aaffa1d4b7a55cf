"""One resource per thread (a blocking connection), closed when its thread ends.

The stores' sync faces give each request thread a connection of its own, so
the threads of a WSGI process do their I/O side by side. Servers keep threads
differently:
gunicorn's ``gthread`` and waitress keep a fixed pool, Werkzeug's development
server (``flask run``) starts a thread per request. A connection kept in a
``threading.local`` and also in a list, to close them all at the end, would
outlive its thread: one leaked connection per request there. Here the
thread's slot holds the only reference to a small holder, and a
:func:`weakref.finalize` closes the resource when the holder goes with its
thread, or at :meth:`PerThread.close_all`.

A resource opened before a fork is never closed in the child: closing it could
disturb the parent (SQLite, for one, may checkpoint and remove its WAL when a
connection closes). The child opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from sessionware._forks import generation

__all__ = ["PerThread"]

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("__weakref__", "finalizer", "generation", "resource")

    def __init__(self, resource: T,
                 finalizer_of: Callable[[_Slot[T]], weakref.finalize[..., _Slot[T]]],
                 ) -> None:
        self.resource = resource
        self.generation = generation()
        self.finalizer = finalizer_of(self)


class PerThread(Generic[T]):
    """Each thread's own ``T``, opened on first use, closed with ``close``."""

    def __init__(self, close: Callable[[T], None]) -> None:
        self._close = close
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot[T]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._generation = generation()

    def get(self, open_resource: Callable[[], T]) -> T:
        """This thread's resource; ``open_resource()`` makes it if it has none."""
        slot: _Slot[T] | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == generation():
            return slot.resource
        resource = open_resource()
        slot = _Slot(resource, self._finalizer)
        with self._current_lock():
            self._slots.add(slot)
        self._local.slot = slot
        return resource

    def discard(self) -> None:
        """Close this thread's resource now (after an error left it unusable)."""
        slot: _Slot[T] | None = getattr(self._local, "slot", None)
        self._local.slot = None
        if slot is not None:
            slot.finalizer()

    def close_all(self) -> None:
        """Close every thread's resource (of this process)."""
        with self._current_lock():
            slots = list(self._slots)
        for slot in slots:
            slot.finalizer()

    def _finalizer(self, slot: _Slot[T]) -> weakref.finalize[..., _Slot[T]]:
        # By process id, not generation: a child drops the thread-locals of
        # the parent's threads (which the fork did not copy) before the
        # generation counter moves, so those finalizers run in the child first.
        return weakref.finalize(slot, _close_if_ours, self._close, slot.resource, os.getpid())

    def _current_lock(self) -> threading.Lock:
        """The lock, new in a forked child (a parent's thread may have held it)."""
        if self._generation != generation():
            self._lock, self._slots = threading.Lock(), weakref.WeakSet()
            self._generation = generation()
        return self._lock


def _close_if_ours(close: Callable[[T], None], resource: T, opened_by: int) -> None:
    if opened_by == os.getpid():
        close(resource)
