"""SessionMiddleware: locked sessions for ASGI apps (Starlette, FastAPI, ...).

A thin driver over :class:`~sessionware._async.core.SessionCore`: it opens the session
when a request arrives, puts it in ``scope["session"]``, commits it when the app
sends ``http.response.start`` (adding Set-Cookie before the headers leave;
a 5xx response commits nothing) and closes it on every way out.

An app may replace ``scope["session"]`` rather than change it: Litestar's
``request.set_session()`` puts a dict or a model there, ``clear_session()``
its ``Empty``. The replacement is taken up as the response starts: a mapping
(or a model, converted as Litestar converts it) becomes the session's data,
``Empty`` or ``None`` invalidates it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Unpack, cast

from sessionware._async.core import SessionCore, SessionTransaction
from sessionware._async.stores.base import Store
from sessionware.config import SessionOptions, settings_from
from sessionware.cookies import read_cookie
from sessionware.exceptions import ConfigurationError, SerializationError, SessionwareError
from sessionware.loading import STATE_KEY, NotLoadedSession
from sessionware.modes import LockMode
from sessionware.responses import respond_to
from sessionware.session import Session
from sessionware.urls import store_from_env

__all__ = ["SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]
"""Any framework's ASGI app: Starlette types scopes and messages as mappings,
Litestar as TypedDicts, and neither type fits the other."""

_START = {"http": "http.response.start", "websocket": "websocket.accept"}


class SessionMiddleware:
    """Server-side sessions for an ASGI app, locked per request.

    :param app: the ASGI application.
    :param store: where sessions live, e.g. ``SQLiteStore("sessions.db")``;
        default: the store the ``SESSIONWARE_STORE_URL`` environment variable
        names (:func:`~sessionware.store_from_env`).
    :param secret_key: signs the cookie; a list rotates keys (the first signs,
        all verify).
    :param options: the :class:`~sessionware.SessionOptions`, documented
        there: ``lock_mode``, ``on_error``, ``idle_timeout``, ``cookie``, ...

    Integrations set the class attributes in a subclass:
    :attr:`session_class`, :attr:`not_loaded_class`.
    """

    session_class: ClassVar[type[Session]] = Session
    """The class of the sessions handed to the app: a :class:`~sessionware.Session`."""

    not_loaded_class: ClassVar[type[NotLoadedSession]] = NotLoadedSession
    """The class of ``scope["session"]`` under lock mode ``lazy`` until the
    request loads it."""

    def __init__(self, app: ASGIApp, *, store: Store | None = None,
                 secret_key: str | Sequence[str],
                 **options: Unpack[SessionOptions]) -> None:
        self.app = app
        self.misconfigured: ConfigurationError | ImportError | None = None
        """Why this middleware cannot serve, found when it was made: a wrong
        option or secret key, no store, a store's missing driver. Starlette
        and FastAPI make their middleware at the first call, the lifespan's,
        where an exception reads as "lifespan unsupported" to uvicorn's
        default (``--lifespan auto``), which would then serve every request a
        500; so it fails the lifespan's startup instead, and each request."""
        try:
            settings = settings_from(options)
            self.core = SessionCore(
                store if store is not None else store_from_env(), secret_key,
                config=settings.config, serializer=settings.serializer,
                session_class=self.session_class, on_event=settings.on_event,
                meter_provider=settings.meter_provider)
        except (ConfigurationError, ImportError) as exc:
            self.misconfigured = exc
            return
        self.check_store = settings.check_store
        self.select_mode = settings.lock_mode
        self.on_error = settings.on_error
        self.cookie_name = self.core.config.cookie.full_name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Any: what each framework's own ASGI types call it with (see ASGIApp)
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if self.misconfigured is not None:
            raise self.misconfigured
        mode = self.select_mode(scope) if kind in _START else LockMode.NONE
        if mode is LockMode.NONE:
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") in ("https", "wss")
        cookie = self._cookie(scope)
        if mode is LockMode.LAZY:
            tx = self.core.begin(cookie, https=https)
            scope["session"] = self.not_loaded_class()
        else:
            try:
                tx = await self.core.open(cookie, mode, https=https)
            except SessionwareError as exc:
                await self._refuse(kind, send, exc)
                return
            scope["session"] = tx.session
        scope[STATE_KEY] = tx
        exchange = _Exchange(self, kind, send, tx, scope)
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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, with the middleware's own start and end: a
        wrong configuration fails the startup before the app starts; a store
        that cannot serve (checked once the app has started, unless
        ``check_store`` is off) fails it after the app has been shut down
        again, so that the server exits with only the reason to show. The
        store is closed when the app has shut down."""
        if self.misconfigured is not None:
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed",
                        "message": f"sessionware: {self.misconfigured}"})
            return
        failure: Message | None = None

        async def receive_shutdown_on_failure() -> Message:
            return {"type": "lifespan.shutdown"} if failure is not None else await receive()

        async def send_checking_store(message: Message) -> None:
            nonlocal failure
            kind = message["type"]
            if kind == "lifespan.startup.complete" and self.check_store:
                try:
                    await self.core.check()
                except SessionwareError as exc:
                    failure = {"type": "lifespan.startup.failed",
                               "message": f"sessionware: the session store cannot serve: {exc}"}
                    await self.core.aclose()
                    return  # the app shuts down first: its receive() says so
            elif kind.startswith("lifespan.shutdown."):
                await self.core.aclose()
                if failure is not None:
                    message = failure
            await send(message)

        await self.app(scope, receive_shutdown_on_failure, send_checking_store)


class _Exchange:
    """One request's response as it goes out: the session is committed as it
    starts, and a failed commit replaces it with the error response."""

    __slots__ = ("_kind", "_middleware", "_placed", "_scope", "_send", "_tx", "refused",
                 "started")

    def __init__(self, middleware: SessionMiddleware, kind: str, send: Send,
                 tx: SessionTransaction, scope: Scope) -> None:
        self._middleware = middleware
        self._kind = kind
        self._send = send
        self._tx = tx
        self._scope = scope
        self._placed = scope["session"]  # what the middleware put there
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
            scope = self._scope
            try:
                if "session" not in scope or scope["session"] is not self._placed:
                    await _take_up(self._tx, scope)
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


async def _take_up(tx: SessionTransaction, scope: Scope) -> None:
    """Make what the app left in ``scope["session"]`` the session to commit.

    A replacement is a change like any other: written only if the response
    commits, refused as in-place changes are where nothing is saved (read
    mode, an early commit, an invalidated session). Under lock mode ``lazy``
    a session not loaded yet is locked and loaded here, as the change needs."""
    current = scope.get("session")
    try:
        if current is tx.session:
            return  # lock mode lazy: load_session() put the loaded session there
    except AttributeError:
        pass  # lock mode lazy, not loaded (tx.loaded would cost lazy requests a call)
    data = _replacement_data(current, scope)
    session = tx.session if tx.loaded else await tx.load(LockMode.EXCLUSIVE)
    if data is None:
        if not session.invalidated:
            session.invalidate()
    elif data != session:  # an equal copy is no change, even where none can be saved
        session.clear()
        session.update(data)
    scope["session"] = session


def _replacement_data(value: object, scope: Scope) -> dict[str, Any] | None:
    """The data a replacement of ``scope["session"]`` holds, or ``None`` for
    "no session": ``None`` itself, or Litestar's ``Empty`` (which its own
    cookie backend, like its ``clear_session()``, treats as clearing it)."""
    if isinstance(value, Mapping):
        return dict(value)
    if value is None or _is_litestar_empty(value):
        return None
    if "litestar_app" in scope:
        return _litestar_model_data(value, scope)
    raise SerializationError(
        f'scope["session"] was replaced by a {type(value).__name__}, not a mapping: '
        "nothing was saved")


def _is_litestar_empty(value: object) -> bool:
    try:
        from litestar.types import Empty
    except ImportError:
        return False
    return value is Empty


def _litestar_model_data(value: object, scope: Scope) -> dict[str, Any]:
    """A model given to Litestar's ``request.set_session()`` (a dataclass,
    pydantic model, msgspec struct, attrs class) as Litestar's own session
    backends store it: JSON by the route's type encoders, read back."""
    from litestar.exceptions import SerializationException
    from litestar.serialization import decode_json, encode_json
    from litestar.utils import get_serializer_from_scope

    routed = "route_handler" in scope  # the route's type encoders, else Litestar's defaults
    serializer = get_serializer_from_scope(cast(Any, scope)) if routed else None
    try:
        data = decode_json(encode_json(value, serializer))
    except SerializationException as exc:
        raise SerializationError(
            f"request.set_session() was given a {type(value).__name__} that Litestar cannot "
            f"encode: nothing was saved ({exc})") from exc
    if not isinstance(data, dict):
        raise SerializationError(
            f"request.set_session() was given a {type(value).__name__}, which is not a "
            "mapping nor a model of one: nothing was saved")
    return data
