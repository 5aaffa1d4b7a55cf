# Generated from sessionware/_async/core.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""The request lifecycle: open, commit, close. Every policy decision lives here;
the ASGI and WSGI drivers only map their protocol's events onto these calls.

::

    tx = core.open(cookie_value, mode, https=...)   # lock + load: 1 store trip
    ...the app reads and changes tx.session...
    set_cookies = tx.commit()    # as the response starts: write + unlock, 1 trip
    tx.close()                   # always: unlock without writing if not committed

A request without a session cookie makes no store call at all unless it writes
the session. An unchanged session is released, not rewritten. A response with a
5xx status commits nothing (unless ``commit_on_5xx``). A write whose outcome the
store left unknown is settled before the request is answered.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sessionware._sync.io.primitives import IS_SYNC, Deadlines, Once, call_hook, shield, sleep
from sessionware._sync.leases import HeldLease, LeaseKeeper
from sessionware._sync.queue import SessionQueues
from sessionware._sync.stores.base import Lease, Locked, SyncStore, backoff_delay
from sessionware._sync.users import UserIndex
from sessionware.config import SessionConfig
from sessionware.cookies import CookieSigner, new_session_id, store_key
from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    LockTimeout,
    OutcomeUnknown,
    QueueFull,
    SerializationError,
    SessionClosed,
    SessionNotLoaded,
    SessionTooLarge,
    SessionwareError,
    StoreError,
    StoreUnavailable,
)
from sessionware.modes import LockMode
from sessionware.serializers import JSONSerializer, Serializer
from sessionware.session import Session, SessionState
from sessionware.telemetry import EventHook, Metrics, SessionEvent

__all__ = ["RETIRED", "RETIRED_IN_FLIGHT", "SyncSessionCore", "SyncSessionTransaction"]

logger = logging.getLogger("sessionware")
T = TypeVar("T")

RETIRED = b"\x00sessionware:retired"
"""What the old record of a regenerated session holds instead of its data: a
tombstone. Requests still queued behind the login with the old cookie find it:
they get an empty session they cannot change and no Set-Cookie, so they neither
enter the new session nor replace its cookie in the browser. No serializer
output starts with a NUL byte."""

RETIRED_IN_FLIGHT = 5.0
"""A tombstone lives ``lock_timeout`` (the longest a request queued behind the
login waits) plus these seconds, for requests still on their way. Short on
purpose: a browser that never received the new cookie (its login response was
lost) gets an unchangeable session until then, and a fresh one after."""


_PROBE_KEY = "0" * 64  # a store key that no session id hashes to in practice


class SyncSessionCore:
    """Sessions for one application: a store, a signing key and a config.

    The async face serves one event loop at a time (the ASGI server's); its
    generated sync twin, :class:`SyncSessionCore`, serves every thread of a
    WSGI process at once.
    """

    def __init__(
        self,
        store: SyncStore,
        secret_key: str | Sequence[str],
        *,
        config: SessionConfig | None = None,
        serializer: Serializer | None = None,
        session_class: type[Session] = Session,
        on_event: EventHook | None = None,
        meter_provider: Any = None,
        expired_events: bool = True,
        set_up: bool = True,
    ) -> None:
        if not isinstance(store, SyncStore):
            raise ConfigurationError(f"store must be a sessionware SyncStore, not {store!r}")
        self.store = store
        self.config = config or SessionConfig()
        # The option's None means "a tenth of idle_timeout": resolved once, here.
        self.refresh_after = (
            self.config.idle_timeout / 10
            if self.config.refresh_after is None
            else self.config.refresh_after
        )
        self.signer = CookieSigner(secret_key)
        self.serializer = serializer or JSONSerializer()
        self.session_class = session_class  # a subclass for frameworks (Flask's SessionMixin)
        self.queues = SessionQueues(self.config.max_waiting)
        self.keeper = LeaseKeeper(store, self.config.lease_ttl, self.guard)
        self.deadlines = Deadlines(self.config.store_timeout)
        self._ready = not set_up  # not set up: the store is used as it is, never made
        self._setting_up = Once()
        self.on_event = on_event
        # an operator's tool has hooks for what it does (revoked), and must
        # not claim the app's expiries away from the app's own hooks
        self._expired_events = expired_events and on_event is not None
        metrics = Metrics(type(store).__name__, meter_provider)
        self.metrics = metrics if metrics.enabled else None
        self.users = UserIndex(self)

    def guard(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store operation, ``operation(*args, **kwargs)``, within
        ``store_timeout``."""
        metrics = self.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            with self.deadlines.bound():
                return operation(*args, **kwargs)
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"the store did not answer within {self.config.store_timeout}s", maybe_applied=True
            ) from exc
        finally:
            if metrics is not None:
                metrics.store_operation(operation, time.perf_counter() - started)

    def guard_write(self, write: Callable[[], T], repeat: Callable[[], T] | None = None) -> T:
        """Run a store write (``write()`` makes the call) within ``store_timeout``;
        when its outcome is unknown, settle it with ``repeat`` (default: the same
        write) before answering, so that a response never says "failed" about a
        change that was applied. Raises :class:`OutcomeUnknown` if it stays unknown."""
        try:
            return self.guard(write)
        except StoreUnavailable as exc:
            if not exc.maybe_applied:
                raise  # known not to be applied: a plain, retryable failure
            return self._settle(repeat or write, exc)

    def _settle(self, repeat: Callable[[], T], unknown: StoreUnavailable) -> T:
        """Repeat a write whose outcome is unknown until the store answers, for
        up to another ``store_timeout``. Repeating is safe: a fenced write
        carries the same token, so it applies the same change again, or fails
        with LeaseLost once a newer holder exists; a create reuses its fresh key."""
        deadline = time.monotonic() + self.config.store_timeout
        for attempt in itertools.count():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sleep(min(remaining, backoff_delay(attempt, base=0.02, cap=0.5)))
            try:
                return self.guard(repeat)
            except StoreUnavailable as exc:
                unknown = exc
            except LeaseLost as exc:
                raise OutcomeUnknown(
                    "the store did not confirm a session write, and a newer request holds "
                    "the session now: the write may or may not have been applied"
                ) from exc
        raise OutcomeUnknown(
            "the store did not confirm a session write, nor answer when it was repeated: "
            f"it may or may not have been applied ({unknown})"
        ) from unknown

    def begin(self, cookie_value: str | None, *, https: bool) -> SyncSessionTransaction:
        """Start a request's session without touching the store: it is loaded
        by :meth:`SyncSessionTransaction.load`, if the request asks for it (lock
        mode ``lazy``). A request that never loads it costs no store trip and
        waits for no lock."""
        return SyncSessionTransaction(self, https, cookie_value)

    def open(
        self, cookie_value: str | None, mode: LockMode, *, https: bool
    ) -> SyncSessionTransaction:
        """Start a request's session and load it at once: lock and load
        (exclusive), or load a snapshot (read). ``mode`` must not be ``none``."""
        tx = self.begin(cookie_value, https=https)
        tx.load(mode)
        return tx

    def ensure_ready(self) -> None:
        """Set the store up on first use, once: the first burst of requests
        shares one ``setup`` instead of each opening connections of its own.
        A failed setup is tried again by the next request."""
        if not self._ready:
            self._setting_up.run(self._setup)

    def _setup(self) -> None:
        if not self._ready:  # another caller's run may have done it
            self.guard(self.store.setup)
            if self._expired_events:
                self.guard(self.store.watch_expired, self._report_expired)
            self._ready = True

    def _report_expired(self, key: str) -> None:
        self.emit(SessionEvent("expired", key, {}))

    def check(self) -> None:
        """Fail now, with the store's reason, if the store cannot serve: set it
        up and read one (absent) session, as the first request would. For the
        drivers' startup check, so a misconfigured store stops the app from
        starting instead of answering every request with 503."""
        self.ensure_ready()
        self.guard(self.store.read, _PROBE_KEY)

    def lock(self, key: str) -> Lease | None:
        """Take ``key``'s lock: first this process's turn, then the store's lock.
        Returns with the turn held if a lease came back; ``None`` if no session."""
        timeout = self.config.lock_timeout
        started = time.monotonic()
        try:
            self.queues.enter(key, timeout)
            try:
                lease = self._acquire(key, started + timeout)
            except BaseException:
                self.queues.leave(key)
                raise
        except LockTimeout as exc:
            if self.metrics is not None:
                self.metrics.refused("queue_full" if isinstance(exc, QueueFull) else "timeout")
            raise
        if lease is None:
            self.queues.leave(key)
        elif self.metrics is not None:
            self.metrics.lock_wait.record(time.monotonic() - started)
        return lease

    def _acquire(self, key: str, deadline: float) -> Lease | None:
        attempt = 0
        while True:
            got = self.guard(self.store.acquire, key, lease_ttl=self.config.lease_ttl)
            if not isinstance(got, Locked):
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(
                    "timed out waiting for this session's lock",
                    retry_after=max(got.retry_after, 0.1),
                )
            self.store.wait(key, min(remaining, got.retry_after), attempt)
            attempt += 1

    def create(self, data: bytes, *, user: str | None = None) -> str:
        """Write ``data`` under a fresh id (insert-only) and return the id.

        With ``user``, the new key is listed in that user's index first, and
        confirmed after: if a revocation of the user marked it meanwhile,
        the new record is discarded (the id returned then names no session)."""
        config = self.config
        self.ensure_ready()
        for _ in range(3):  # a 256-bit collision is not expected even once
            session_id = new_session_id()
            key = store_key(session_id)
            if user is not None:
                self.users.add(user, key)
            write = functools.partial(
                self.store.create,
                key,
                data,
                ttl=config.idle_timeout,
                absolute_ttl=config.absolute_lifetime,
            )
            # Settling: a repeat that finds the fresh key taken found our first attempt.
            if self.guard_write(write, functools.partial(_taken_or_created, write)):
                if self.metrics is not None:
                    self.metrics.created.add(1)
                if user is not None and not self.users.confirm(user, key):
                    logger.info("a session was revoked with its user as it was created")
                return session_id
        raise StoreError("the store reported every fresh session id as taken")

    def emit(self, event: SessionEvent) -> None:
        """Hand ``event`` to the app's ``on_event`` hook, if any; a hook that
        raises is logged, never lets the request fail."""
        if self.on_event is None:
            return
        try:
            call_hook(self.on_event, event)
        except Exception:
            logger.exception(
                "the on_event hook failed on a %r event (the request goes on)", event.kind
            )

    def close(self) -> None:
        self.store.close()


def _taken_or_created(create: Callable[[], bool]) -> bool:
    create()
    return True


class SyncSessionTransaction:
    """One request's session. The session behaves as a transaction: committed
    as the response starts, abandoned (released unsaved) on every other way out."""

    __slots__ = (
        "_cookie",
        "_core",
        "_event",
        "_had_cookie",
        "_headers",
        "_held",
        "_https",
        "_key",
        "_lease",
        "_loaded_id",
        "_mode",
        "_saved",
        "_user",
        "load_failure",
        "session",
    )

    def __init__(self, core: SyncSessionCore, https: bool, cookie_value: str | None) -> None:
        self._core = core
        self._https = https
        self._cookie = cookie_value
        self._had_cookie = cookie_value is not None
        self._mode: LockMode | None = None  # how the session was loaded; None: not yet
        # The error that loading raised, so a driver can tell it from the app's own
        # errors and answer it as it answers a failure before the app ran.
        self.load_failure: SessionwareError | None = None
        self._loaded_id = False  # the cookie named a live session
        self._key: str | None = None
        self._lease: Lease | None = None
        self._held: HeldLease | None = None
        self._headers: list[str] | None = None
        self._event: SessionEvent | None = None  # for the on_event hook, once committed
        # What the store holds for this session as far as this request knows,
        # once nothing more will be saved (read mode, after commit): a session
        # that no longer serializes to it was changed in vain.
        self._saved: bytes | None = None
        self._user: str | None = None  # the user the locked record was bound to
        self.session: Session

    @property
    def loaded(self) -> bool:
        return self._mode is not None

    def load(self, mode: LockMode) -> Session:
        """Verify the cookie, then lock and load the session (``exclusive``) or
        load a snapshot (``read``), once per request. Loading again returns the
        same session; a session loaded ``read`` cannot be locked afterwards."""
        if self._mode is not None:
            return self._loaded_again(mode)
        if self._headers is not None:
            raise SessionClosed(
                "the response has started: the session can no longer be loaded in this request"
            )
        if mode not in (LockMode.EXCLUSIVE, LockMode.READ):
            raise ConfigurationError(f"a session is loaded 'exclusive' or 'read', not {mode!r}")
        try:
            self._load(mode)
        except SessionwareError as exc:
            self.load_failure = exc
            raise
        self._mode = mode
        return self.session

    def _load(self, mode: LockMode) -> None:
        core = self._core
        session_id = core.signer.unsign(self._cookie) if self._cookie else None
        if session_id is None:
            self.start_empty(mode)
            return
        core.ensure_ready()
        key = store_key(session_id)
        if mode is LockMode.READ:
            self.load_snapshot(key)
        else:
            self.load_locked(key)

    def _loaded_again(self, mode: LockMode) -> Session:
        if mode is LockMode.EXCLUSIVE and self._mode is LockMode.READ:
            raise SessionClosed(
                "the session was loaded read-only in this request and cannot be locked now "
                "(its snapshot was handed out already): load it 'exclusive' first"
            )
        return self.session

    def start_empty(self, mode: LockMode) -> None:
        if mode is LockMode.READ:
            self.session = self._core.session_class(state=SessionState.READ_ONLY)
        else:
            self.session = self._open_session(None)

    def load_snapshot(self, key: str) -> None:
        core = self._core
        raw = core.guard(
            core.store.read, key, ttl=core.config.idle_timeout, refresh_after=core.refresh_after
        )
        self._loaded_id = raw is not None
        if raw == RETIRED:
            self.session = core.session_class(state=SessionState.RETIRED)
            return
        data = core.serializer.loads(raw) if raw is not None else None
        self.session = core.session_class(data, SessionState.READ_ONLY)
        self._saved = raw

    def load_locked(self, key: str) -> None:
        core = self._core
        lease = core.lock(key)
        if lease is None:  # unknown or expired id: never adopted
            self.session = self._open_session(None)
            return
        self._key, self._lease, self._loaded_id = key, lease, True
        if lease.data == RETIRED:  # a concurrent login moved the session away
            self.session = core.session_class(state=SessionState.RETIRED)
            self.close()  # nothing here to keep locked
            return
        self._held = core.keeper.track(lease)
        try:
            self.session = self._open_session(core.serializer.loads(lease.data))
            self._user = self.session.user_id
        except BaseException:
            self.close()
            raise

    def _open_session(self, data: dict[str, object] | None) -> Session:
        session = self._core.session_class(data)
        if not IS_SYNC:  # ``session.commit()``; WSGI has commit_session(request)
            session._commit_early = self.commit_early
        return session

    def commit_early(self) -> None:
        """The app commits before the response starts (``session.commit()``)."""
        if self._mode is None:
            raise SessionNotLoaded(
                "the session is not loaded in this request (lock mode "
                "'lazy'): load it before committing it"
            )
        self.session._check_commit()  # read-only, twice, invalidated...
        self.commit()

    def commit(self, status: int = 200) -> list[str]:
        """Save the session and release its lock; returns the ``Set-Cookie``
        header values the response must carry. A 5xx ``status`` saves nothing
        (unless ``commit_on_5xx``). Idempotent; a later call raises
        :class:`SessionClosed` if the session was changed since."""
        if self._headers is not None:
            self._refuse_unsaved_changes()
            return self._headers
        if self._mode is None:  # never loaded: nothing to save
            self._headers = []
            return self._headers
        if self.session.state is SessionState.OPEN:
            self.session._state = SessionState.COMMITTED
        if status >= 500 and not self._core.config.commit_on_5xx:
            self.close()  # the request failed: release without writing
            self._headers = []
        else:
            self._headers = self._write()
            if self._event is not None:  # the lock is released by now
                self._core.emit(self._event)
        return self._headers

    def _write(self) -> list[str]:
        session = self.session
        if session.state is SessionState.RETIRED:
            return []  # the browser holds the new session's cookie by now: keep it
        if session.state is SessionState.READ_ONLY:
            self._refuse_unsaved_changes()
            return self._forget_cookie()
        users = self._core.users
        if session.invalidated:
            if self._lease is not None:
                key = self._lease.key
                self._finish(functools.partial(self._core.store.delete, self._lease))
                self._event = SessionEvent("invalidated", key, session)
                if self._user is not None:
                    users.remove(self._user, key)
            return self._forget_cookie(force=self._had_cookie)
        data = self._serialize()
        user = session.user_id
        if self._lease is not None and not session.regenerated:
            key = self._lease.key
            if user is not None and user != self._user:
                users.add(user, key)  # listed before the record says so
            self._save(self._lease, data)
            if self._user is not None and self._user != user:
                users.remove(self._user, key)
            cookies = []
        elif not session:
            cookies = self._forget_cookie()
        else:
            cookies = self._move_to_new_id(data)
        self._saved = data
        return cookies

    def _serialize(self) -> bytes:
        data = self._core.serializer.dumps(self.session)
        if len(data) > self._core.config.max_size:
            raise SessionTooLarge(len(data), self._core.config.max_size)
        if self._core.metrics is not None:
            self._core.metrics.size.record(len(data))
        return data

    def _save(self, lease: Lease, data: bytes) -> None:
        core = self._core
        store, config = core.store, core.config
        if data == lease.data:
            self._finish(
                functools.partial(
                    store.release, lease, ttl=config.idle_timeout, refresh_after=core.refresh_after
                )
            )
        else:
            self._finish(functools.partial(store.commit, lease, data, ttl=config.idle_timeout))

    def _move_to_new_id(self, data: bytes) -> list[str]:
        """New sessions, and regenerate(): a fresh id, then the old record is
        retired (:data:`RETIRED`). The new record is created first, so a
        failure loses nothing."""
        core = self._core
        session_id = core.create(data, user=self.session.user_id)
        previous = self._lease.key if self._lease is not None else None
        if self._lease is not None:
            self._finish(
                functools.partial(
                    core.store.commit,
                    self._lease,
                    RETIRED,
                    ttl=core.config.lock_timeout + RETIRED_IN_FLIGHT,
                )
            )
            if previous is not None and self._user is not None:
                core.users.remove(self._user, previous)  # retired: no session there
        self._event = SessionEvent(
            "regenerated" if previous else "created", store_key(session_id), self.session, previous
        )
        return [core.config.cookie.set_cookie(core.signer.sign(session_id), https=self._https)]

    def _forget_cookie(self, force: bool = False) -> list[str]:
        """Expire a cookie that names no live session, so the browser stops
        sending it (and costing a store trip per request)."""
        if force or (self._had_cookie and not self._loaded_id):
            return [self._core.config.cookie.expire_cookie(https=self._https)]
        return []

    def _refuse_unsaved_changes(self) -> None:
        """Raise while the request runs if the session changed where nothing
        is saved any more (nested changes escape the session's own guard)."""
        if self._unsaved_change():
            raise SessionClosed(
                f"the session was changed after {self._closed_by()}: the change would be "
                "lost (nested values of a committed or read-only session cannot change)"
            )

    def _unsaved_change(self) -> bool:
        """Whether the session changed since ``_saved``; a change is reported
        once, an unchanged session is checked again at the next step."""
        saved = self._saved
        if saved is None:
            return False
        serializer = self._core.serializer
        try:
            current = serializer.dumps(self.session)
        except SerializationError:
            current = None
        changed = current != saved and (
            current is None or current != serializer.dumps(serializer.loads(saved))
        )
        if changed:
            self._saved = None
        return changed

    def _closed_by(self) -> str:
        if self.session.state is SessionState.READ_ONLY:
            return "it was loaded read-only (lock mode 'read')"
        return "it was committed"

    def _finish(self, write: Callable[[], None]) -> None:
        """Run the write that ends the lease, then hand the turn on at once
        (not when the response body is done). A lease found lost is not ours
        to release any more."""
        try:
            self._core.guard_write(write)
        except LeaseLost:
            self._lost()
            raise
        self._end_lease()

    def _lost(self) -> None:
        if self._core.metrics is not None:
            self._core.metrics.leases_lost.add(1)
        self._end_lease()

    def _end_lease(self) -> None:
        if self._lease is None:
            return
        assert self._key is not None
        if self._held is not None:
            self._core.keeper.untrack(self._held)
        self._lease = self._held = None
        self._core.queues.leave(self._key)

    def close(self) -> None:
        """End the request: a lease not committed is released without writing,
        shielded from cancellation, so a client gone away cannot leak the lock.
        A change made after the commit, while the response went out, is logged."""
        if self._lease is not None:
            shield(self._release_unwritten)
        if self._unsaved_change():
            logger.error(
                "session changed after %s, while the response was sent: the change was not saved",
                self._closed_by(),
            )

    def _release_unwritten(self) -> None:
        lease = self._lease
        if lease is None:
            return
        try:
            self._core.guard(self._core.store.release, lease)
        except LeaseLost:
            self._lost()  # a newer holder has it already; there is nothing of ours to undo
        except StoreError as exc:
            logger.warning("could not release a session lock (it lapses by itself): %s", exc)
        finally:
            self._end_lease()
