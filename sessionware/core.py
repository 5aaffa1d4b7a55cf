"""The request lifecycle: open, commit, close. Every policy decision lives here;
the ASGI and WSGI drivers only map their protocol's events onto these calls.

::

    tx = await core.open(cookie_value, mode, https=...)   # lock + load: 1 store trip
    ...the app reads and changes tx.session...
    set_cookies = await tx.commit()    # as the response starts: write + unlock, 1 trip
    await tx.close()                   # always: unlock without writing if not committed

A request without a session cookie makes no store call at all unless it writes
the session. An unchanged session is released, not rewritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

from sessionware.cookies import CookieOptions, CookieSigner, new_session_id, store_key
from sessionware.deadlines import Deadlines
from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    LockTimeout,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
)
from sessionware.leases import HeldLease, LeaseKeeper
from sessionware.modes import LockMode
from sessionware.queue import SessionQueues
from sessionware.serializers import JSONSerializer, Serializer
from sessionware.session import Session, SessionState
from sessionware.stores.base import Lease, Locked, Store

__all__ = ["SessionConfig", "SessionCore", "SessionOptions", "SessionTransaction"]

logger = logging.getLogger("sessionware")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timing and limits. Durations in seconds.

    :param idle_timeout: a session unused this long expires (sliding).
    :param absolute_lifetime: a session expires this long after creation,
        however active; ``None`` for no limit.
    :param lock_timeout: how long a request waits for its session's lock.
    :param lease_ttl: the lock's lease; renewed while the request runs, so it
        only bounds how long a crashed holder blocks its session.
    :param max_waiting: requests of one process that may hold or wait for one
        session; more are refused at once.
    :param max_size: largest serialized session, in bytes.
    :param store_timeout: longest a single store operation may take.
    :param refresh_after: an unchanged session's idle expiry is slid only when
        that moves it by this much (default: a tenth of ``idle_timeout``).
    """

    idle_timeout: float = 20 * 60
    absolute_lifetime: float | None = None
    lock_timeout: float = 10.0
    lease_ttl: float = 5.0
    max_waiting: int = 256
    max_size: int = 256 * 1024
    store_timeout: float = 5.0
    refresh_after: float | None = None
    cookie: CookieOptions = field(default_factory=CookieOptions)

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "lock_timeout", "lease_ttl", "store_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.absolute_lifetime is not None and not self.absolute_lifetime > 0:
            raise ConfigurationError("absolute_lifetime must be positive or None")
        if self.max_waiting < 1 or self.max_size < 2:
            raise ConfigurationError("max_waiting and max_size must be positive")

    @property
    def refresh_interval(self) -> float:
        return self.idle_timeout / 10 if self.refresh_after is None else self.refresh_after


class SessionOptions(TypedDict, total=False):
    """The keyword options both middlewares accept: :class:`SessionConfig`'s fields."""

    idle_timeout: float
    absolute_lifetime: float | None
    lock_timeout: float
    lease_ttl: float
    max_waiting: int
    max_size: int
    store_timeout: float
    refresh_after: float | None
    cookie: CookieOptions


class SessionCore:
    """Sessions for one application: a store, a signing key and a config.

    Thread-affine: one core serves one event loop at a time (the ASGI server's,
    or the WSGI driver's process loop).
    """

    def __init__(self, store: Store, secret_key: str | Sequence[str], *,
                 config: SessionConfig | None = None,
                 serializer: Serializer | None = None,
                 session_class: type[Session] = Session) -> None:
        if not isinstance(store, Store):
            raise ConfigurationError(f"store must be a sessionware Store, not {store!r}")
        self.store = store
        self.config = config or SessionConfig()
        self.signer = CookieSigner(secret_key)
        self.serializer = serializer or JSONSerializer()
        self.session_class = session_class  # a subclass for frameworks (Flask's SessionMixin)
        self.queues = SessionQueues(self.config.max_waiting)
        self.keeper = LeaseKeeper(store, self.config.lease_ttl, self.guard)
        self.deadlines = Deadlines(self.config.store_timeout)
        self._ready = False
        self._setting_up: asyncio.Task[None] | None = None

    @classmethod
    def from_options(cls, store: Store, secret_key: str | Sequence[str],
                     serializer: Serializer | None,
                     options: SessionOptions,
                     session_class: type[Session] = Session) -> SessionCore:
        """The core the middlewares build from their keyword arguments."""
        try:
            config = SessionConfig(**options)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from exc
        return cls(store, secret_key, config=config, serializer=serializer,
                   session_class=session_class)

    async def guard(self, operation: Awaitable[T]) -> T:
        """Run one store operation within ``store_timeout``."""
        try:
            return await self.deadlines.bound(operation)
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"the store did not answer within {self.config.store_timeout}s") from exc

    async def open(self, cookie_value: str | None, mode: LockMode, *,
                   https: bool) -> SessionTransaction:
        """Start a request's session: verify the cookie, then lock and load
        (exclusive), or load a snapshot (read). ``mode`` must not be ``none``."""
        session_id = self.signer.unsign(cookie_value) if cookie_value else None
        tx = SessionTransaction(self, https, had_cookie=cookie_value is not None)
        if session_id is None:
            tx.start_empty(mode)
            return tx
        await self.ensure_ready()
        key = store_key(session_id)
        if mode is LockMode.READ:
            await tx.load_snapshot(key)
        else:
            await tx.load_locked(key)
        return tx

    async def ensure_ready(self) -> None:
        """Set the store up on first use, once: the first burst of requests
        shares one ``setup`` instead of each opening connections of its own.
        A failed setup is tried again by the next request."""
        if self._ready:
            return
        task = self._setting_up
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._setting_up = asyncio.ensure_future(self._setup())
        await asyncio.shield(task)

    async def _setup(self) -> None:
        await self.guard(self.store.setup())
        self._ready = True

    async def lock(self, key: str) -> Lease | None:
        """Take ``key``'s lock: first this process's turn, then the store's lock.
        Returns with the turn held if a lease came back; ``None`` if no session."""
        timeout = self.config.lock_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.queues.enter(key, timeout)
        try:
            lease = await self._acquire(key, deadline)
        except BaseException:
            self.queues.leave(key)
            raise
        if lease is None:
            self.queues.leave(key)
        return lease

    async def _acquire(self, key: str, deadline: float) -> Lease | None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            got = await self.guard(self.store.acquire(key, lease_ttl=self.config.lease_ttl))
            if not isinstance(got, Locked):
                return got
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeout("timed out waiting for this session's lock",
                                  retry_after=max(got.retry_after, 0.1))
            await self.store.wait(key, min(remaining, got.retry_after), attempt)
            attempt += 1

    async def create(self, data: bytes) -> str:
        """Store ``data`` under a fresh id (insert-only) and return the id."""
        config = self.config
        await self.ensure_ready()
        for _ in range(3):  # a 256-bit collision is not expected even once
            session_id = new_session_id()
            created = await self.guard(self.store.create(
                store_key(session_id), data, ttl=config.idle_timeout,
                absolute_ttl=config.absolute_lifetime))
            if created:
                return session_id
        raise StoreError("the store reported every fresh session id as taken")

    async def aclose(self) -> None:
        await self.store.aclose()


class SessionTransaction:
    """One request's session. The session behaves as a transaction: committed
    as the response starts, discarded on every other way out."""

    __slots__ = ("_core", "_had_cookie", "_headers", "_held", "_https", "_key",
                 "_lease", "_loaded_id", "session")

    def __init__(self, core: SessionCore, https: bool, *, had_cookie: bool) -> None:
        self._core = core
        self._https = https
        self._had_cookie = had_cookie
        self._loaded_id = False  # the cookie named a live session
        self._key: str | None = None
        self._lease: Lease | None = None
        self._held: HeldLease | None = None
        self._headers: list[str] | None = None
        self.session: Session

    def start_empty(self, mode: LockMode) -> None:
        if mode is LockMode.READ:
            self.session = self._core.session_class(state=SessionState.READ_ONLY)
        else:
            self.session = self._open_session(None)

    async def load_snapshot(self, key: str) -> None:
        core = self._core
        raw = await core.guard(core.store.read(
            key, ttl=core.config.idle_timeout, refresh_after=core.config.refresh_interval))
        self._loaded_id = raw is not None
        data = core.serializer.loads(raw) if raw is not None else None
        self.session = self._core.session_class(data, SessionState.READ_ONLY)

    async def load_locked(self, key: str) -> None:
        core = self._core
        lease = await core.lock(key)
        if lease is None:  # unknown or expired id: never adopted
            self.session = self._open_session(None)
            return
        self._key, self._lease, self._loaded_id = key, lease, True
        self._held = core.keeper.track(lease)
        try:
            self.session = self._open_session(core.serializer.loads(lease.data))
        except BaseException:
            await self.close()
            raise

    def _open_session(self, data: dict[str, object] | None) -> Session:
        session = self._core.session_class(data)
        session._commit_early = self.commit_early
        return session

    async def commit_early(self) -> None:
        await self.commit()

    async def commit(self) -> list[str]:
        """Save the session and release its lock; returns the ``Set-Cookie``
        header values the response must carry. Idempotent."""
        if self._headers is None:
            if self.session.state is SessionState.OPEN:
                self.session._state = SessionState.COMMITTED
            self._headers = await self._write()
        return self._headers

    async def _write(self) -> list[str]:
        session = self.session
        if session.state is SessionState.READ_ONLY:
            return self._forget_cookie()
        if session.invalidated:
            if self._lease is not None:
                await self._finish(self._core.store.delete(self._lease))
            return self._forget_cookie(force=self._had_cookie)
        data = self._serialize()
        if self._lease is not None and not session.regenerated:
            await self._save(self._lease, data)
            return []
        if not session:
            return self._forget_cookie()
        return await self._move_to_new_id(data)

    def _serialize(self) -> bytes:
        data = self._core.serializer.dumps(self.session)
        if len(data) > self._core.config.max_size:
            raise SessionTooLarge(len(data), self._core.config.max_size)
        return data

    async def _save(self, lease: Lease, data: bytes) -> None:
        store, config = self._core.store, self._core.config
        if data == lease.data:
            await self._finish(store.release(
                lease, ttl=config.idle_timeout, refresh_after=config.refresh_interval))
        else:
            await self._finish(store.commit(lease, data, ttl=config.idle_timeout))

    async def _move_to_new_id(self, data: bytes) -> list[str]:
        """New sessions, and regenerate(): a fresh id, then the old record goes.
        The new record is created first, so a failure loses nothing."""
        core = self._core
        session_id = await core.create(data)
        if self._lease is not None:
            await self._finish(core.store.delete(self._lease))
        return [core.config.cookie.set_cookie(core.signer.sign(session_id), https=self._https)]

    def _forget_cookie(self, force: bool = False) -> list[str]:
        """Expire a cookie that names no live session, so the browser stops
        sending it (and costing a store trip per request)."""
        if force or (self._had_cookie and not self._loaded_id):
            return [self._core.config.cookie.expire_cookie(https=self._https)]
        return []

    async def _finish(self, operation: Awaitable[None]) -> None:
        """Run the operation that ends the lease, then hand the turn on at once
        (not when the response body is done)."""
        await self._core.guard(operation)
        self._end_lease()

    def _end_lease(self) -> None:
        if self._lease is None:
            return
        assert self._key is not None
        if self._held is not None:
            self._core.keeper.untrack(self._held)
        self._lease = self._held = None
        self._core.queues.leave(self._key)

    @property
    def holds_lock(self) -> bool:
        """Whether :meth:`close` has a lock to release (a synchronous driver can
        skip running the loop when it has not)."""
        return self._lease is not None

    async def close(self) -> None:
        """End the request: a lease not committed is released without writing.
        Shielded from cancellation, so a client gone away cannot leak the lock."""
        if self._lease is not None:
            await asyncio.shield(self._release_unwritten())

    async def _release_unwritten(self) -> None:
        lease = self._lease
        if lease is None:
            return
        try:
            await self._core.guard(self._core.store.release(lease))
        except LeaseLost:
            pass  # a newer holder has it already; there is nothing of ours to undo
        except StoreError as exc:
            logger.warning("could not release a session lock (it lapses by itself): %s", exc)
        finally:
            self._end_lease()
