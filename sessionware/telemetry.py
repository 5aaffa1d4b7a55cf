"""What sessionware tells the app and its operators: events and metrics.

**Events.** ``on_event`` (a middleware option, and one of
:class:`~sessionware.SessionAdmin`) is called with a :class:`SessionEvent`
when a session is created, regenerated, invalidated or revoked,
after the store confirmed it and the session's lock is released, so a hook
never lengthens a lock. A hook may be a function or a coroutine function; an
exception in it is logged and the request goes on. Hooks run before the
response starts: hand slow work (a network call) to a queue.

Where the store can tell (:meth:`~sessionware.stores.Store.watch_expired`:
RedisStore, with keyspace notifications enabled on the server; SQLiteStore
and PostgresStore, from their purges), the hook is also called when a
session expires, at most once across the app's processes, from the store's
listener or purge rather than a request.

**Metrics.** Through the OpenTelemetry API (``pip install sessionware[otel]``),
on the meter provider given as ``meter_provider``, else the global one; with
the API absent, nothing is measured and nothing is paid. Instruments, named in
the style of OpenTelemetry's semantic conventions:

=======================================  =========  ==============================
instrument                               unit       attributes
=======================================  =========  ==============================
``sessionware.lock.wait.duration``       s          (histogram) time to the lease
``sessionware.lock.refusals``            {refusal}  ``sessionware.refusal``:
                                                    ``timeout`` or ``queue_full``
``sessionware.lease.lost``               {lease}    leases found taken at a write
``sessionware.store.operation.duration`` s          ``sessionware.store.operation``,
                                                    ``sessionware.store.name``
``sessionware.session.size``             By         (histogram) committed sizes
``sessionware.sessions.created``         {session}  new sessions stored
=======================================  =========  ==============================
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["EventHook", "Metrics", "SessionEvent"]

EventKind = Literal["created", "regenerated", "invalidated", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened to a session, after the store confirmed it.

    :param kind: ``created``, ``regenerated``, ``invalidated``,
        ``revoked`` (removed by an operator, or with every session of its
        user: :class:`~sessionware.SessionAdmin`; ``session`` then holds the
        user id only, under ``sessionware.user``, if it was bound) or
        ``expired`` (removed by the store at its expiry; ``session`` is then
        empty: the data went with it).
    :param store_key: the session's key in the store (a hash of its id: the
        id itself, a credential, is never handed out); for ``regenerated``,
        the new session's key, with the retired one in ``previous_key``.
    :param session: the session as committed (read-only by now), so a hook
        can read, say, its user id.
    """

    kind: EventKind
    store_key: str
    session: dict[str, Any]
    previous_key: str | None = None


EventHook = Callable[[SessionEvent], object]
"""A function, or a coroutine function (ASGI only), called with each
:class:`SessionEvent`."""


class Metrics:
    """The instruments, on ``meter_provider`` (default: OpenTelemetry's
    global one); :data:`enabled` is false when the API is not installed."""

    def __init__(self, store_name: str, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError:
            self.enabled = False
            return
        from sessionware import __version__

        meter = (meter_provider or metrics.get_meter_provider()).get_meter(
            "sessionware", __version__)
        self.enabled = True
        self._store = {"sessionware.store.name": store_name}
        self.lock_wait = meter.create_histogram(
            "sessionware.lock.wait.duration", unit="s",
            description="Time a request waited for its session's lease")
        self.refusals = meter.create_counter(
            "sessionware.lock.refusals", unit="{refusal}",
            description="Requests refused the lock: timed out, or the queue was full")
        self.leases_lost = meter.create_counter(
            "sessionware.lease.lost", unit="{lease}",
            description="Writes refused because a newer request holds the session")
        self.operation = meter.create_histogram(
            "sessionware.store.operation.duration", unit="s",
            description="Duration of one store operation")
        self.size = meter.create_histogram(
            "sessionware.session.size", unit="By", description="Size of committed sessions")
        self.created = meter.create_counter(
            "sessionware.sessions.created", unit="{session}", description="Sessions created")
        self._operations: dict[object, dict[str, str]] = {}

    def store_operation(self, operation: Callable[..., Awaitable[Any]] | Callable[..., Any],
                        seconds: float) -> None:
        # The core passes bound store methods (equal, and equally hashed, at
        # every access) or partials of them (new objects each time: keyed by
        # their method, so the cache stays as small as the store's methods).
        # On every store call: a getattr with a default that misses costs an
        # exception, ten times the rest when no SDK records anything.
        key = operation.func if type(operation) is functools.partial else operation
        attributes = self._operations.get(key)
        if attributes is None:
            name = getattr(key, "__name__", "operation")
            attributes = self._operations[key] = {**self._store,
                                                  "sessionware.store.operation": name}
        self.operation.record(seconds, attributes)

    def refused(self, reason: Literal["timeout", "queue_full"]) -> None:
        self.refusals.add(1, {**self._store, "sessionware.refusal": reason})
