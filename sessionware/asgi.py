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
from sessionware.modes import LockMode, ModeRule, mode_selector
from sessionware.responses import ErrorHandler, default_error_response, respond_to
from sessionware.serializers import Serializer
from sessionware.stores.base import Store

__all__ = ["SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_START = {"http": "http.response.start", "websocket": "websocket.accept"}


class SessionMiddleware:
    """Server-side sessions, locked per request.

    :param store: where sessions live, e.g. ``SQLiteStore("sessions.db")``.
    :param secret_key: signs the cookie; a list rotates keys (the first signs,
        all verify).
    :param lock_mode: ``"exclusive"`` (default), ``"read"``, ``"none"``, a
        callable over the scope, or a list of :class:`~sessionware.Rule`.
    :param on_error: maps a session failure to the response sent instead
        (default: 503 with Retry-After, or 500 for unsaveable sessions).
    :param serializer: default JSON.
    :param options: :class:`~sessionware.SessionConfig` fields: ``cookie``,
        ``idle_timeout``, ``absolute_lifetime``, ``lock_timeout``, ``lease_ttl``,
        ``max_waiting``, ``max_size``, ``store_timeout``, ``refresh_after``,
        ``commit_on_5xx``.
    """

    def __init__(self, app: ASGIApp, *, store: Store, secret_key: str | Sequence[str],
                 lock_mode: ModeRule = LockMode.EXCLUSIVE,
                 on_error: ErrorHandler = default_error_response,
                 serializer: Serializer | None = None,
                 **options: Unpack[SessionOptions]) -> None:
        self.app = app
        self.core = SessionCore.from_options(store, secret_key, serializer, options)
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
        try:
            tx = await self.core.open(self._cookie(scope), mode, https=https)
        except SessionwareError as exc:
            await self._refuse(kind, send, exc)
            return
        scope["session"] = tx.session
        try:
            await self.app(scope, receive, self._committing_send(kind, send, tx))
        finally:
            await tx.close()

    def _committing_send(self, kind: str, send: Send, tx: SessionTransaction) -> Send:
        start = _START[kind]
        refused = False

        async def send_with_session(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the app's response was replaced by an error response
            if message["type"] == start:
                try:
                    cookies = await tx.commit(message.get("status", 200))
                except SessionwareError as exc:
                    refused = True
                    await self._refuse(kind, send, exc)
                    return
                if cookies:
                    message = {**message, "headers": [
                        *message.get("headers", ()),
                        *((b"set-cookie", c.encode("latin-1")) for c in cookies)]}
            await send(message)

        return send_with_session

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
        """Close the store when the app has shut down."""
        async def send_closing_store(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.core.aclose()
            await send(message)
        return send_closing_store
