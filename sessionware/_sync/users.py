# Generated from sessionware/_async/users.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""The index from a user to their sessions, kept through the store contract
itself, so every store has it without code of its own.

A session is bound to a user by :meth:`Session.bind_user
<sessionware.Session.bind_user>`, which writes the user id into the session's
data under ``sessionware.session.USER_KEY``. Each user with bound
sessions has one more record in the store, at :func:`user_index_key` (a hash,
like session keys), holding the keys of their sessions with the time each was
bound. It is changed like a session is: locked (``SyncSessionCore.lock``),
then committed, created or deleted, fenced.

The invariant: **the index lists every live session of its user, at every
moment** (it may list more). So a key is added before the record that needs it
is created or committed with the user in it, and removed only after that
record was deleted, retired or committed without the user; entries whose
session died are pruned lazily, when the index is listed or revoked.

``UserIndex.revoke`` locks the index and discards (``SyncStore.discard``)
every session it lists, locked or not: a request holding one then fails its
commit with :class:`~sessionware.LeaseLost` and cannot write it back. A
session whose record does not exist yet (a login between its index entry and
its create) is marked revoked instead; the login, finding the mark once its
record exists (``UserIndex.confirm``, under the same lock), discards its
own new session. Either the revocation saw the record or the login sees the
mark: no session of the user outlives a revocation that began after its
login started to write.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sessionware._sync.io.primitives import shield
from sessionware._sync.stores.base import Lease, Record
from sessionware.cookies import store_key
from sessionware.exceptions import LeaseLost, StoreError
from sessionware.reports import UserSession
from sessionware.session import USER_KEY
from sessionware.telemetry import SessionEvent

if TYPE_CHECKING:
    from sessionware._sync.core import SyncSessionCore

__all__ = [
    "INDEX_MARK",
    "USER_KEY",
    "IndexEntries",
    "UserIndex",
    "decode_index",
    "is_index",
    "user_index_key",
]

logger = logging.getLogger("sessionware")

INDEX_MARK = b"\x00sessionware:users\n"
"""What an index record's data starts with, before its JSON: a NUL byte, which
no serializer output starts with, so a scan tells indexes from sessions."""

NOT_A_SESSION = b"\x00"
"""The first byte of every record that is not a session: user indexes and the
tombstones of regenerated sessions (``core.RETIRED``)."""

UNBOUNDED_INDEX_TTL = 400 * 24 * 3600.0
"""How long an index lives after its last change when sessions have no
absolute lifetime (they may then live forever, kept alive by use): a session
bound longer ago than this, and used all along, drops out of its index. Set
``absolute_lifetime`` to make the index exact."""

INDEX_MARGIN = 3600.0
"""Seconds an index outlives the absolute lifetime of the sessions it lists:
a session is created (at most two ``store_timeout`` after its entry, settling
included) a little after its entry was written."""


def user_index_key(user_id: str) -> str:
    """The store key of ``user_id``'s index: hashed as session keys are (the
    user id is not readable in the store), and never the key of a session
    (session ids are random, and NUL-free)."""
    return store_key("user\x00" + user_id)


@dataclass(slots=True)
class IndexEntries:
    """An index record's content: session key -> when it was bound (epoch
    seconds); ``revoked`` lists keys a revocation found no record for yet."""

    sessions: dict[str, float] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)

    def encode(self) -> bytes:
        body = {"sessions": self.sessions, "revoked": sorted(self.revoked)}
        return INDEX_MARK + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def is_index(data: bytes) -> bool:
    return data.startswith(INDEX_MARK)


def decode_index(data: bytes) -> IndexEntries:
    """The entries of an index record (empty for anything else)."""
    if not is_index(data):
        return IndexEntries()
    body = json.loads(data[len(INDEX_MARK) :])
    sessions = {str(k): float(v) for k, v in body.get("sessions", {}).items()}
    return IndexEntries(sessions, {str(k) for k in body.get("revoked", ())} & set(sessions))


class UserIndex:
    """The user indexes of one core's store, changed under the core's locks."""

    def __init__(self, core: SyncSessionCore) -> None:
        self._core = core

    @property
    def _ttl(self) -> float:
        absolute = self._core.config.absolute_lifetime
        return UNBOUNDED_INDEX_TTL if absolute is None else absolute + INDEX_MARGIN

    @property
    def _pending_grace(self) -> float:
        """How long after its entry a session's record may still be created:
        the create, and the settling of an unknown outcome."""
        return 2 * self._core.config.store_timeout + 5.0

    # -- the binding requests' side -------------------------------------------

    def add(self, user_id: str, key: str) -> None:
        """List ``key`` under ``user_id``, before its record is written."""
        now = time.time()
        ttl = self._ttl

        def change(entries: IndexEntries) -> None:
            # Entries older than any session can live are dead: prune them free.
            for old in [k for k, at in entries.sessions.items() if at + ttl < now]:
                entries.sessions.pop(old)
                entries.revoked.discard(old)
            entries.sessions[key] = now
            entries.revoked.discard(key)

        self._change(user_id, change)

    def confirm(self, user_id: str, key: str) -> bool:
        """After ``key``'s record was created: ``False`` if a revocation
        marked it meanwhile, and then the record was discarded. Runs under
        the index's lock, so it and a revocation never interleave."""
        with self._locked(user_id) as lease:
            if lease is None:
                return True  # no index: nothing revoked since the entry (it was removed)
            entries = decode_index(lease.data)
            if key not in entries.revoked:
                self._release(lease)
                return True
            self._core.guard(self._core.store.discard, key)
            del entries.sessions[key]
            entries.revoked.discard(key)
            self._write(lease, entries)
        self._core.emit(SessionEvent("revoked", key, {USER_KEY: user_id}))
        return False

    def remove(self, user_id: str, key: str) -> None:
        """Unlist ``key``, after its record was deleted, retired or rebound.
        A failure is logged, not raised: the session's own write succeeded,
        and an entry too many is pruned later."""

        def change(entries: IndexEntries) -> None:
            entries.sessions.pop(key, None)
            entries.revoked.discard(key)

        try:
            self._change(user_id, change)
        except StoreError as exc:
            logger.warning(
                "could not unlist a session from its user's index (pruned later): %s", exc
            )

    # -- the operators' side ----------------------------------------------------

    def entries(self, user_id: str) -> IndexEntries:
        """The index as stored; no lock taken."""
        raw = self._core.guard(self._core.store.read, user_index_key(user_id))
        return decode_index(raw) if raw is not None else IndexEntries()

    def sessions(self, user_id: str) -> list[UserSession]:
        """``user_id``'s live sessions, oldest binding first. Entries of dead
        sessions are pruned (one locked write, only if there are any)."""
        entries = self.entries(user_id)
        found: list[UserSession] = []
        dead: set[str] = set()
        idle = self._core.config.idle_timeout
        for key, bound_at in sorted(entries.sessions.items(), key=lambda item: item[1]):
            record = self._core.guard(self._core.store.inspect, key)
            if record is None:
                if self._is_dead(bound_at):
                    dead.add(key)
                continue
            if record.data.startswith(NOT_A_SESSION):
                continue  # a tombstone: the regenerated session is listed under its new key
            found.append(_listed(record, bound_at, idle))
        if dead:
            self._prune(user_id, dead)
        return found

    def revoke(self, user_id: str) -> list[str]:
        """Discard every session of ``user_id``, locked or not; returns the
        keys of those removed. Emits a ``revoked`` event for each, once the
        index's lock is released."""
        revoked: list[str] = []
        with self._locked(user_id) as lease:
            if lease is None:
                return revoked
            entries = decode_index(lease.data)
            store = self._core.store
            for key, bound_at in sorted(entries.sessions.items(), key=lambda item: item[1]):
                if self._core.guard(store.discard, key):
                    revoked.append(key)
                elif not self._is_dead(bound_at):
                    entries.revoked.add(key)  # its record may be on its way: confirm() ends it
                    continue
                del entries.sessions[key]
                entries.revoked.discard(key)
            self._write(lease, entries)
        for key in revoked:
            self._core.emit(SessionEvent("revoked", key, {USER_KEY: user_id}))
        return revoked

    # -- under the index's lock -------------------------------------------------

    def _is_dead(self, bound_at: float) -> bool:
        """An entry with no record that is past the time its record could
        still be created: its session is gone for good (keys never return)."""
        return bound_at + self._pending_grace < time.time()

    def _prune(self, user_id: str, dead: set[str]) -> None:
        def change(entries: IndexEntries) -> None:
            for key in dead:
                entries.sessions.pop(key, None)
                entries.revoked.discard(key)

        self._change(user_id, change)

    def _change(self, user_id: str, change: Callable[[IndexEntries], None]) -> None:
        """Apply ``change`` to the index of ``user_id`` under its lock; create
        the index if there is none, delete it once empty."""
        core = self._core
        index_key = user_index_key(user_id)
        while True:
            with self._locked(user_id) as lease:
                if lease is not None:
                    entries = decode_index(lease.data)
                    change(entries)
                    self._write(lease, entries)
                    return
            entries = IndexEntries()
            change(entries)
            if not entries.sessions:
                return
            create = functools.partial(
                core.store.create, index_key, entries.encode(), ttl=self._ttl
            )
            if core.guard_write(create):
                return
            # Another request created the index meanwhile: lock it and change that.

    def _write(self, lease: Lease, entries: IndexEntries) -> None:
        store = self._core.store
        if entries.sessions:
            data = entries.encode()
            self._core.guard_write(lambda: store.commit(lease, data, ttl=self._ttl))
        else:
            self._core.guard_write(lambda: store.delete(lease))

    def _release(self, lease: Lease) -> None:
        self._core.guard(self._core.store.release, lease)

    @contextmanager
    def _locked(self, user_id: str) -> Iterator[Lease | None]:
        """The index's lease (``None``: no index), renewed while held; on the
        way out released unless :meth:`_write` or :meth:`_release` ended it."""
        core = self._core
        index_key = user_index_key(user_id)
        lease = core.lock(index_key)
        if lease is None:
            yield None
            return
        held = core.keeper.track(lease)
        ended = False
        try:
            yield lease
            ended = True
        finally:
            core.keeper.untrack(held)
            try:
                if not ended:
                    shield(lambda: self._quietly_release(lease))
            finally:
                core.queues.leave(index_key)

    def _quietly_release(self, lease: Lease) -> None:
        try:
            self._core.guard(self._core.store.release, lease)
        except (LeaseLost, StoreError) as exc:
            logger.warning("could not release a user index's lock (it lapses by itself): %s", exc)


def _listed(record: Record, bound_at: float, idle_timeout: float) -> UserSession:
    locked = record.locked_until is not None and record.locked_until > time.time()
    return UserSession(
        record.key,
        record.created_at,
        bound_at,
        record.expires_at - idle_timeout,
        record.expires_at,
        locked,
    )
