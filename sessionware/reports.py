"""What the admin tools answer: plain data, shared by both faces (outside the
one source on purpose, like ``sessionware.stores.answers``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SessionInfo", "StoreStats", "UserSession"]


@dataclass(frozen=True, slots=True)
class UserSession:
    """One live session of a user, as ``SessionAdmin.user_sessions`` lists it.

    Times are seconds since the epoch, by the store's clock.

    :ivar store_key: the session's key in the store (never its id).
    :ivar created_at: when the session was created (``None`` from a store
        that does not record it).
    :ivar bound_at: when the session was bound to the user (the login).
    :ivar last_seen: the session's expiry minus ``idle_timeout``: when a
        request last wrote it or slid its expiry. Slides are throttled by
        ``refresh_after``, so it may be that much older than the last
        request; once the absolute lifetime caps the expiry it reads earlier
        still.
    :ivar expires_at: when it expires unless used again.
    :ivar locked: whether a request holds its lock now.
    """

    store_key: str
    created_at: float | None
    bound_at: float
    last_seen: float
    expires_at: float
    locked: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as ``SessionAdmin.show`` finds it.

    :ivar store_key: its key in the store.
    :ivar kind: ``session``, ``retired`` (the tombstone a regeneration left)
        or ``user-index`` (the record listing a user's sessions).
    :ivar data: the session's data (deserialized), the index's entries, or
        ``None`` for a tombstone or data the serializer cannot read.
    :ivar user: the user id the session is bound to, if any.
    :ivar size: bytes stored.
    :ivar created_at: when the record was created (epoch seconds; ``None``
        from a store that does not record it).
    :ivar expires_at: epoch seconds.
    :ivar last_seen: ``expires_at - idle_timeout`` (see :class:`UserSession`).
    :ivar locked_until: the lock's deadline (epoch seconds), or ``None``
        when unlocked; in the past for a lease that lapsed unreleased.
    :ivar locked_at: when the lock's holder took it (epoch seconds; leases
        are renewed, so this, not the deadline, dates it), or ``None``.
    """

    store_key: str
    kind: str
    data: Any
    user: str | None
    size: int
    created_at: float | None
    expires_at: float
    last_seen: float
    locked_until: float | None
    locked_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class StoreStats:
    """What one pass over the store found (``SessionAdmin.stats``).

    :ivar sessions: live sessions (records that are neither tombstones nor
        user indexes).
    :ivar locked: sessions whose lock a request holds now.
    :ivar lapsed: sessions whose lease lapsed without a release (a holder
        that died or stalled; the next request takes the lock over).
    :ivar oldest_lock: how long, in seconds, the longest-held of the locks
        held now has been held (a request that long in progress), ``None``
        with none held (or a store that does not date its locks).
    :ivar oldest_lapsed: how long ago, in seconds, the oldest of the lapsed
        locks was taken, ``None`` with none lapsed or undated.
    :ivar retired: tombstones of regenerated sessions.
    :ivar user_indexes: users with an index record.
    :ivar sizes: the sessions' sizes in bytes: ``min``, ``p50``, ``p90``,
        ``p99``, ``max``, ``total`` (empty with no session).
    """

    sessions: int = 0
    locked: int = 0
    lapsed: int = 0
    oldest_lock: float | None = None
    oldest_lapsed: float | None = None
    retired: int = 0
    user_indexes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
