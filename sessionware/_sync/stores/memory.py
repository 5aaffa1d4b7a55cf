# Generated from sessionware/_async/stores/memory.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncMemoryStore: sessions in a dict of this process, for tests and development
(they die with the process and no other worker sees them).

Records: ``{key: _Record}``, each with ``data``, ``token`` (one counter for
every key), ``locked_until`` (0: unlocked), ``locked_at`` (read only while
locked), ``expires_at``, ``absolute_expires_at`` (inf: none) and
``created_at``, on the monotonic clock; a :class:`~sessionware.stores.Record`
answers them on the epoch.

Operations, each one step on the dict (under a thread lock in the sync twin,
``SyncMemoryStore``; the async face runs on one loop): ``acquire``,
``commit``, ``release``, ``renew``, ``delete`` check the record's token and
deadlines; ``read``, ``create``, ``discard``, ``inspect`` look up the key;
``scan`` takes the keys, then their records batch by batch; ``purge_expired``,
and a sweep by any operation once per ``_SWEEP_INTERVAL``, drop expired
records; ``wait`` is woken at a release.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from sessionware._sync.io.primitives import ThreadLock
from sessionware._sync.stores.base import SCAN_BATCH, Lease, Locked, Record, SyncStore
from sessionware._sync.waiters import Waiters
from sessionware.stores._errors import lease_lost

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SyncMemoryStore"]

_SWEEP_INTERVAL = 1.0


@dataclass(slots=True)
class _Record:
    data: bytes
    token: int
    locked_until: float
    expires_at: float
    absolute_expires_at: float
    created_at: float
    locked_at: float = 0.0


def _answer(key: str, record: _Record, now: float) -> Record:
    """``record`` with its deadlines moved from the monotonic clock to the epoch."""
    shift = time.time() - now
    locked_until: float | None = None
    locked_at: float | None = None
    if record.locked_until:
        locked_until, locked_at = record.locked_until + shift, record.locked_at + shift
    return Record(
        key,
        record.data,
        min(record.expires_at, record.absolute_expires_at) + shift,
        locked_until,
        record.created_at + shift,
        locked_at,
    )


class SyncMemoryStore(SyncStore):
    """Sessions in a dict of this process. No setup, no dependencies."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._lock = ThreadLock()
        self._waiters: Waiters[str] = Waiters()
        self._next_sweep = 0.0
        # one counter for every key: a record created again under an old key
        # never hands out a token a stale lease of the old record still carries
        self._tokens = itertools.count(1)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        parts = url.parts
        if parts.netloc or parts.path.strip("/"):
            raise url.error("memory:// takes no host or path (it is one process's memory)")
        return cls(**url.options(cls))

    def _live(self, key: str, now: float) -> _Record | None:
        self._sweep(now)
        record = self._records.get(key)
        if record is not None and min(record.expires_at, record.absolute_expires_at) <= now:
            del self._records[key]
            return None
        return record

    def _fenced(self, lease: Lease) -> _Record:
        record = self._live(lease.key, time.monotonic())
        if record is None or record.token != lease.token:
            raise lease_lost(lease)
        return record

    @staticmethod
    def _slide(record: _Record, now: float, ttl: float, refresh_after: float) -> None:
        target = min(now + ttl, record.absolute_expires_at)
        if target - record.expires_at >= refresh_after:
            record.expires_at = target

    def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        with self._lock:
            now = time.monotonic()
            record = self._live(key, now)
            if record is None:
                return None
            if record.locked_until > now:
                return Locked(record.locked_until - now)
            record.token = next(self._tokens)
            record.locked_until, record.locked_at = now + lease_ttl, now
            return Lease(key, record.token, record.data)

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        with self._lock:
            record = self._fenced(lease)
            now = time.monotonic()
            record.data = data
            record.locked_until = 0.0
            record.expires_at = min(now + ttl, record.absolute_expires_at)
            self._waiters.wake(lease.key)

    def release(
        self, lease: Lease, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> None:
        with self._lock:
            record = self._fenced(lease)
            record.locked_until = 0.0
            if ttl is not None:
                self._slide(record, time.monotonic(), ttl, refresh_after)
            self._waiters.wake(lease.key)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        with self._lock:
            record = self._fenced(lease)
            if not record.locked_until:  # committed or released: nobody holds it now
                raise lease_lost(lease)
            record.locked_until = time.monotonic() + lease_ttl

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        with self._lock:
            now = time.monotonic()
            record = self._live(key, now)
            if record is None:
                return None
            if ttl is not None:
                self._slide(record, now, ttl, refresh_after)
            return record.data

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._live(key, now) is not None:
                return False
            absolute = now + absolute_ttl if absolute_ttl is not None else float("inf")
            expires = min(now + ttl, absolute)
            self._records[key] = _Record(data, next(self._tokens), 0.0, expires, absolute, now)
            return True

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        with self._lock:
            purged = self._purge(time.monotonic())
        if progress is not None and purged:
            progress(purged)
        return purged

    def delete(self, lease: Lease) -> None:
        with self._lock:
            self._fenced(lease)
            del self._records[lease.key]
            self._waiters.wake(lease.key)

    def discard(self, key: str) -> bool:
        with self._lock:
            if self._live(key, time.monotonic()) is None:
                return False
            del self._records[key]
            self._waiters.wake(key)
            return True

    def inspect(self, key: str) -> Record | None:
        with self._lock:
            now = time.monotonic()
            record = self._live(key, now)
            return None if record is None else _answer(key, record, now)

    def scan(self, *, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        # The keys of the moment, then their records batch by batch: the lock
        # is not held across a yield, and records may change in between.
        with self._lock:
            keys = list(self._records)
        for start in range(0, len(keys), batch_size):
            with self._lock:
                now = time.monotonic()
                batch = [
                    _answer(k, r, now)
                    for k in keys[start : start + batch_size]
                    if (r := self._live(k, now)) is not None
                ]
            if batch:
                yield batch

    def wait(self, key: str, timeout: float, attempt: int) -> None:
        self._waiters.wait(key, timeout, unless=lambda: self._unlocked(key))

    def _unlocked(self, key: str) -> bool:
        """Whether ``key``'s lock is free (or the session gone): nothing to wait for."""
        with self._lock:
            now = time.monotonic()
            record = self._live(key, now)
            return record is None or record.locked_until <= now

    def _sweep(self, now: float) -> None:
        """Drop expired records, at most once per interval, so abandoned sessions
        do not pile up in a long-running process. Every operation checks, not
        only create: a process may see no new sessions for a long time."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        self._purge(now)

    def _purge(self, now: float) -> int:
        expired = [
            k for k, r in self._records.items() if min(r.expires_at, r.absolute_expires_at) <= now
        ]
        for key in expired:
            del self._records[key]
        return len(expired)
