"""SessionAdmin: look into a session store and act on it, from an app (an
admin page, a password change) or from the ``sessionware`` command.

::

    admin = SessionAdmin(store, secret_key=SECRET)      # the app's store and key
    await admin.revoke_user("alice")                    # log out everywhere
    for s in await admin.user_sessions("alice"): ...    # created_at, bound_at, last_seen
    info = await admin.show(cookie_value)               # or a store key
    stats = await admin.stats()                         # one pass over the store

Its generated twin, :class:`SyncSessionAdmin`, takes a blocking store
(``store.sync()``) for WSGI apps and scripts. Every call goes through the
store contract's operators' operations (``discard``, ``inspect``, ``scan``),
which take no session lock: revoking a session a request holds makes that
request's commit fail with :class:`~sessionware.LeaseLost` (409), and the
session stays gone.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from sessionware._async.core import RETIRED, SessionCore
from sessionware._async.stores.base import Record, Store
from sessionware._async.users import NOT_A_SESSION, decode_index, is_index
from sessionware.config import SessionConfig
from sessionware.cookies import CookieSigner, is_cookie_value, store_key
from sessionware.exceptions import SerializationError
from sessionware.reports import SessionInfo, StoreStats, UserSession
from sessionware.serializers import Serializer
from sessionware.session import USER_KEY
from sessionware.telemetry import EventHook, SessionEvent

__all__ = ["SessionAdmin", "session_reference"]

_STORE_KEY = re.compile(r"[0-9a-f]{64}")


def session_reference(reference: str, signer: CookieSigner | None) -> str:
    """The store key ``reference`` names: a store key itself (64 hex digits,
    as events and listings show them), or a session cookie's value
    (``<id>.<signature>``), which only a ``signer`` with the app's secret
    turns into a key. Raises :class:`ValueError` saying which it is not."""
    reference = reference.strip()
    if _STORE_KEY.fullmatch(reference):
        return reference
    if is_cookie_value(reference):
        if signer is None:
            raise ValueError("this is a session cookie's value: give the app's secret key "
                             "(--secret or SESSIONWARE_SECRET) to read it, or the store key")
        session_id = signer.unsign(reference)
        if session_id is None:
            raise ValueError("this cookie value's signature does not verify with the given "
                             "secret key")
        return store_key(session_id)
    raise ValueError("not a session: give a store key (64 hex digits) or the value of a "
                     "session cookie")


class SessionAdmin:
    """Operations on the sessions of ``store``.

    :param store: the app's store (the same URL or object).
    :param secret_key: the app's secret key(s), to read cookie values
        (:meth:`show` and :meth:`revoke` accept store keys without it).
    :param config: the app's session config; its ``idle_timeout`` dates
        ``last_seen``, its ``absolute_lifetime`` the user indexes' lifetime.
    :param serializer: the app's serializer, to show session data.
    :param on_event: called with a ``revoked`` :class:`SessionEvent` for
        each session revoked (never with ``expired`` ones: the app's own
        hooks receive those).
    :param set_up: set the store up before its first operation, as the app
        does (:meth:`~sessionware.stores.Store.setup`: its file, table or indexes made when
        missing); ``False``, as the ``sessionware`` command does, uses the
        store as it is: a store that is not there fails with the store's
        reason, and a mistyped path or table name leaves nothing behind.
    """

    def __init__(self, store: Store, *, secret_key: str | Sequence[str] | None = None,
                 config: SessionConfig | None = None, serializer: Serializer | None = None,
                 on_event: EventHook | None = None, set_up: bool = True) -> None:
        self.signer = CookieSigner(secret_key) if secret_key is not None else None
        # The core gives the index its locks and timeouts; it never signs here,
        # so without the app's key it gets a throwaway one.
        self.core = SessionCore(store, secret_key or secrets.token_urlsafe(32), config=config,
                                serializer=serializer, on_event=on_event,
                                expired_events=False, set_up=set_up)
        self.store = store

    async def __aenter__(self) -> SessionAdmin:
        await self.core.ensure_ready()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the store (only for an admin that owns it, as the command does)."""
        await self.store.aclose()

    def key_of(self, reference: str) -> str:
        """The store key of a session: see :func:`session_reference`."""
        return session_reference(reference, self.signer)

    async def show(self, reference: str) -> SessionInfo | None:
        """The session ``reference`` names (a store key or a cookie value),
        or ``None`` if it does not exist."""
        key = self.key_of(reference)
        await self.core.ensure_ready()
        record = await self.core.guard(self.store.inspect, key)
        return None if record is None else self._info(record)

    async def revoke(self, reference: str) -> bool:
        """Remove one session, locked or not; ``False`` if it did not exist.
        A request holding it fails its commit with ``LeaseLost`` (409)."""
        key = self.key_of(reference)
        core = self.core
        await core.ensure_ready()
        record = await core.guard(self.store.inspect, key)
        if not await core.guard(self.store.discard, key):
            return False
        user = None if record is None else self._info(record).user
        if user is not None:
            await core.users.remove(user, key)
        await core.emit(SessionEvent("revoked", key, {USER_KEY: user} if user else {}))
        return True

    async def revoke_user(self, user_id: str) -> list[str]:
        """Remove every session bound to ``user_id`` (``Session.bind_user``),
        locked or not; returns their store keys."""
        await self.core.ensure_ready()
        return await self.core.users.revoke(user_id)

    async def user_sessions(self, user_id: str) -> list[UserSession]:
        """The live sessions bound to ``user_id``, oldest binding first."""
        await self.core.ensure_ready()
        return await self.core.users.sessions(user_id)

    async def stats(self, progress: Callable[[int], object] | None = None) -> StoreStats:
        """One pass over the store (``Store.scan``); ``progress`` is
        called with the number of records of each batch."""
        await self.core.ensure_ready()
        stats = StoreStats()
        sizes: list[int] = []
        now = time.time()
        held, lapsed = _Locks(), _Locks()
        async for batch in self.store.scan():
            for record in batch:
                _count(stats, record, sizes, now, held, lapsed)
            if progress is not None:
                progress(len(batch))
        stats.locked, stats.oldest_lock = held.count, held.age(now)
        stats.lapsed, stats.oldest_lapsed = lapsed.count, lapsed.age(now)
        stats.sizes = _distribution(sizes)
        return stats

    async def purge(self, progress: Callable[[int], object] | None = None) -> int:
        """Remove the expired records now (``Store.purge_expired``);
        ``progress`` is called with the count of each batch removed.

        Not bounded by ``store_timeout`` as a whole, unlike every other call
        here: a store with a million expired records takes its time, batch by
        batch, each batch a short operation of its own."""
        await self.core.ensure_ready()
        return await self.store.purge_expired(progress=progress)

    def _info(self, record: Record) -> SessionInfo:
        kind, data, user = "session", None, None
        if record.data == RETIRED:
            kind = "retired"
        elif is_index(record.data):
            entries = decode_index(record.data)
            kind, data = "user-index", {"sessions": entries.sessions,
                                        "revoked": sorted(entries.revoked)}
        else:
            try:
                data = self.core.serializer.loads(record.data)
            except SerializationError:
                data = None  # not this serializer's: shown by its size only
            bound = data.get(USER_KEY) if isinstance(data, dict) else None
            user = bound if isinstance(bound, str) else None
        return SessionInfo(record.key, kind, data, user, len(record.data), record.created_at,
                           record.expires_at, record.expires_at - self.core.config.idle_timeout,
                           record.locked_until, record.locked_at)


class _Locks:
    """The locks of one kind (held, lapsed) a scan found: how many, and
    when the oldest was taken."""

    def __init__(self) -> None:
        self.count = 0
        self.oldest: float | None = None

    def add(self, locked_at: float | None) -> None:
        self.count += 1
        if locked_at is not None and (self.oldest is None or locked_at < self.oldest):
            self.oldest = locked_at

    def age(self, now: float) -> float | None:
        return None if self.oldest is None else max(0.0, now - self.oldest)


def _count(stats: StoreStats, record: Record, sizes: list[int], now: float,
           held: _Locks, lapsed: _Locks) -> None:
    if record.data.startswith(NOT_A_SESSION):
        if is_index(record.data):
            stats.user_indexes += 1
        else:
            stats.retired += 1
        return
    stats.sessions += 1
    sizes.append(len(record.data))
    if record.locked_until is not None:
        (held if record.locked_until > now else lapsed).add(record.locked_at)


def _distribution(sizes: list[int]) -> dict[str, int]:
    if not sizes:
        return {}
    sizes.sort()

    def at(fraction: float) -> int:
        return sizes[min(len(sizes) - 1, int(fraction * len(sizes)))]

    return {"min": sizes[0], "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": sizes[-1], "total": sum(sizes)}
