"""What store operations answer, :class:`Lease`, :class:`Locked` and
:class:`Record`, and how a
waiter paces its re-checks. Outside the one source on purpose: both faces of
every store (and stores written elsewhere) answer with these same classes, and
both faces of the core tell a lease from a refusal by them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Lease", "Locked", "Record", "backoff_delay"]


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to change one session until ``commit``, ``release`` or ``delete``.

    :ivar key: the store key of the session.
    :ivar token: the fencing token this lease was granted with.
    :ivar data: the data last committed, as bytes.
    """

    key: str
    token: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Locked:
    """The answer of :meth:`~sessionware.stores.Store.acquire` when another holder has the lock.

    :ivar retry_after: seconds until the holder's lease lapses (at the most).
    """

    retry_after: float


@dataclass(frozen=True, slots=True)
class Record:
    """A live record as :meth:`~sessionware.stores.Store.inspect` and
    :meth:`~sessionware.stores.Store.scan` see it, for operators: nothing
    here grants a right to change it.

    :ivar key: the store key.
    :ivar data: the data last committed, as bytes.
    :ivar expires_at: when the record expires unless used again: the idle
        deadline (already capped by the absolute one), in seconds since the
        epoch by the store's clock.
    :ivar locked_until: the lock's deadline, same clock, or ``None`` when no
        request holds the lock (never locked, committed or released). A past
        deadline is a lease that lapsed without a release: its holder died or
        stalled, and the next acquire takes it over.
    :ivar created_at: when :meth:`~sessionware.stores.Store.create` wrote the
        record, same clock (``None`` from a store that does not keep it).
    :ivar locked_at: when the current holder's acquire granted its lease
        (renewals keep it), same clock; ``None`` whenever ``locked_until`` is.
        ``now - locked_at`` is how long the lock has been held.
    """

    key: str
    data: bytes
    expires_at: float
    locked_until: float | None
    created_at: float | None = None
    locked_at: float | None = None


def backoff_delay(attempt: int, *, base: float = 0.001, cap: float = 0.05) -> float:
    """Exponential backoff with full jitter: the delay before re-check ``attempt``.

    Jitter spreads the waiters of several processes so they do not retry in step.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 16)))
    return random.uniform(ceiling / 2, ceiling)
