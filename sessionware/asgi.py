"""SessionMiddleware: locked sessions for ASGI apps (Starlette, FastAPI, ...).

A thin driver over :class:`~sessionware.core.SessionCore`: it opens the session
when a request arrives, puts it in ``scope["session"]``, commits it when the app
sends ``http.response.start`` (adding Set-Cookie before the headers leave;
a 5xx response commits nothing) and closes it on every way out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Unpack

from sessionware.config import SessionOptions
from sessionware.cookies import read_cookie
from sessionware.core import SessionCore, SessionTransaction
from sessionware.exceptions import SessionwareError
from sessionware.loading import NOT_LOADED, TRANSACTION_KEY
from sessionware.modes import LockMode, ModeRule, mode_selector
from sessionware.responses import ErrorHandler, default_error_response, respond_to
from sessionware.serializers import Serializer
from sessionware.stores.base import Store
from sessionware.telemetry import EventHook
from sessionware.urls import store_from_env

__all__ = ["SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_START = {"http": "http.response.start", "websocket": "websocket.accept"}


class SessionMiddleware:
    """Server-side sessions, locked per request.

    :param store: where sessions live, e.g. ``SQLiteStore("sessions.db")``;
        default: the store the ``SESSIONWARE_STORE_URL`` environment variable
        names (:func:`~sessionware.store_from_env`).
    :param secret_key: signs the cookie; a list rotates keys (the first signs,
        all verify).
    :param lock_mode: ``"exclusive"`` (default), ``"read"``, ``"lazy"`` (load
        only in the routes that ask: :mod:`sessionware.loading`), ``"none"``,
        a callable over the scope, or a list of :class:`~sessionware.Rule`.
    :param on_error: maps a session failure to the response sent instead
        (default: 503 with Retry-After, or 500 for unsaveable sessions).
    :param serializer: default JSON.
    :param on_event: called with a :class:`~sessionware.telemetry.SessionEvent`
        when a session is created, regenerated or invalidated, once the store
        confirmed it and the lock is released; an exception in it is logged.
    :param meter_provider: the OpenTelemetry meter provider for sessionware's
        metrics (:mod:`sessionware.telemetry`); default: the global one. No
        metrics without the ``opentelemetry-api`` package.
    :param check_store: at the ASGI lifespan's startup, set the store up and
        read from it once: a store that cannot serve (a wrong URL or path, no
        server, no permission) fails the startup with its reason, instead of
        every request answering 503. ``False`` starts without it (the first
        request sets the store up).
    :param options: :class:`~sessionware.SessionConfig` fields: ``cookie``,
        ``idle_timeout``, ``absolute_lifetime``, ``lock_timeout``, ``lease_ttl``,
        ``max_waiting``, ``max_size``, ``store_timeout``, ``refresh_after``,
        ``commit_on_5xx``.
    """

    def __init__(self, app: ASGIApp, *, store: Store | None = None,
                 secret_key: str | Sequence[str],
                 lock_mode: ModeRule = LockMode.EXCLUSIVE,
                 on_error: ErrorHandler = default_error_response,
                 serializer: Serializer | None = None,
                 check_store: bool = True,
                 on_event: EventHook | None = None,
                 meter_provider: Any = None,
                 **options: Unpack[SessionOptions]) -> None:
        self.app = app
        self.check_store = check_store
        self.core = SessionCore.from_options(
            store if store is not None else store_from_env(), secret_key, serializer, options,
            on_event=on_event, meter_provider=meter_provider)
        self.select_mode = mode_selector(lock_mode)
        self.on_error = on_error
        self.cookie_name = self.core.config.cookie.full_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        mode = self.select_mode(scope) if kind in _START else LockMode.NONE
        if mode is LockMode.NONE:
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") in ("https", "wss")
        cookie = self._cookie(scope)
        if mode is LockMode.LAZY:
            tx = self.core.begin(cookie, https=https)
            scope["session"] = NOT_LOADED
        else:
            try:
                tx = await self.core.open(cookie, mode, https=https)
            except SessionwareError as exc:
                await self._refuse(kind, send, exc)
                return
            scope["session"] = tx.session
        scope[TRANSACTION_KEY] = tx
        exchange = _Exchange(self, kind, send, tx)
        try:
            await self.app(scope, receive, exchange.send)
        except SessionwareError as exc:
            # The app's own load_session() failed (lock mode lazy) and it let the
            # error through: answer it as a failure before the app ran is answered.
            if exc is not tx.load_failure or (exchange.started and not exchange.refused):
                raise
            if not exchange.started:
                await self._refuse(kind, send, exc)
        finally:
            await tx.close()

    def _cookie(self, scope: Scope) -> str | None:
        name = self.cookie_name
        for header, value in scope["headers"]:
            if header == b"cookie":
                found = read_cookie(value.decode("latin-1"), name)
                if found is not None:
                    return found
        return None

    async def _refuse(self, kind: str, send: Send, exc: SessionwareError) -> None:
        response = respond_to(exc, self.on_error)
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1013 if response.status == 503
                        else 1011})
            return
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                for k, v in response.all_headers()]})
        await send({"type": "http.response.body", "body": response.body})

    def _lifespan_send(self, send: Send) -> Send:
        """Check the store when the app has started (unless ``check_store``
        is off): a store that cannot serve fails the startup with its reason.
        Close the store when the app has shut down."""
        async def send_checking_store(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and self.check_store:
                try:
                    await self.core.check()
                except SessionwareError as exc:
                    message = {"type": "lifespan.startup.failed",
                               "message": f"sessionware: the session store cannot serve: {exc}"}
            elif message["type"] == "lifespan.shutdown.complete":
                await self.core.aclose()
            await send(message)
        return send_checking_store


class _Exchange:
    """One request's response as it goes out: the session is committed as it
    starts, and a failed commit replaces it with the error response."""

    __slots__ = ("_kind", "_middleware", "_send", "_tx", "refused", "started")

    def __init__(self, middleware: SessionMiddleware, kind: str, send: Send,
                 tx: SessionTransaction) -> None:
        self._middleware = middleware
        self._kind = kind
        self._send = send
        self._tx = tx
        self.started = False
        self.refused = False

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the app's response was replaced by an error response
        if message["type"] == _START[self._kind]:
            self.started = True
            failure = self._tx.load_failure
            if failure is not None and message.get("status") == 500:
                # A failed load_session() that the app let through, answered by a
                # framework's error middleware inside this one: answer it as on_error says.
                self.refused = True
                await self._middleware._refuse(self._kind, self._send, failure)
                return
            try:
                cookies = await self._tx.commit(message.get("status", 200))
            except SessionwareError as exc:
                self.refused = True
                await self._middleware._refuse(self._kind, self._send, exc)
                return
            if cookies:
                message = {**message, "headers": [
                    *message.get("headers", ()),
                    *((b"set-cookie", c.encode("latin-1")) for c in cookies)]}
        await self._send(message)
