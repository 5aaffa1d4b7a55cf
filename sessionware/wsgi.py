"""WSGISessionMiddleware: locked sessions for WSGI apps (Flask, Bottle, Pyramid, ...).

The WSGI twin of :mod:`sessionware.asgi`: a thin driver over the sync face of
the core (:class:`~sessionware._sync.core.SyncSessionCore`, generated from
:mod:`sessionware._async.core`), with the sync face of the store. No event loop: each
request thread does its own store I/O, at the three moments that touch the
store::

    request arrives             core.open   verify the cookie, lock and load;
                                            environ["sessionware.session"]
    the app calls start_response tx.commit  save and unlock, add Set-Cookie,
                                            before any byte leaves (a WSGI server
                                            sends the headers with the first body)
    the body is closed           tx.close   unlock without writing, unless committed

A request the app fails saves nothing: the app raises, answers with a 5xx
status, calls ``start_response`` with ``exc_info``, or a framework that turns
exceptions into its own error page says so with :func:`abandon_session`
(:mod:`sessionware.flask` does, for Flask). A commit that fails replaces the
app's response with the error response of
:func:`~sessionware.responses.respond_to`; the app's iterable is closed unread.

The app uses the session through the names every driver has, over the
environ (or a request object with ``.environ``): :func:`uses_session` and
:func:`load_session` (lock mode ``lazy``), and :func:`commit_session`, the
synchronous form of ``await session.commit()``: commit and unlock now, before
a long streamed response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar, Unpack, cast
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from sessionware._async.stores.base import Store
from sessionware._sync.core import SyncSessionCore, SyncSessionTransaction
from sessionware._sync.stores.base import SyncStore
from sessionware.config import SessionOptions, settings_from
from sessionware.cookies import read_cookie
from sessionware.exceptions import SessionwareError
from sessionware.loading import STATE_KEY, NotLoadedSession, load_mode, request_state
from sessionware.modes import LockMode
from sessionware.responses import ErrorHandler, ErrorResponse, respond_to
from sessionware.session import Session
from sessionware.urls import store_from_env

__all__ = ["SESSION_KEY", "HasEnviron", "WSGINotLoadedSession", "WSGIRequest",
           "WSGISessionMiddleware", "abandon_session", "commit_session", "error_response",
           "load_session", "uses_session"]

SESSION_KEY = "sessionware.session"
"""The environ key of the request's :class:`~sessionware.Session`."""


ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]
Write = Callable[[bytes], object]
Handler = TypeVar("Handler", bound=Callable[..., Any])


class WSGINotLoadedSession(NotLoadedSession):
    """``environ["sessionware.session"]`` under lock mode ``lazy`` until the
    app loads it."""

    __slots__ = ()

    how_to_load = ("declare the handler with @uses_session() (sessionware.wsgi), or call "
                   "sessionware.wsgi.load_session(environ) first")


class WSGISessionMiddleware:
    """Server-side sessions for a WSGI app, locked per request.

    :param app: the WSGI application.
    :param store: where sessions live, e.g. ``SQLiteStore("sessions.db")``:
        the same store classes as for ASGI. The middleware uses the store's
        blocking face (:meth:`~sessionware.stores.Store.sync`); a sync store
        (``SyncSQLiteStore(...)``) is used as it is. Default: the store the
        ``SESSIONWARE_STORE_URL`` environment variable names.
    :param secret_key: signs the cookie; a list rotates keys (the first signs,
        all verify).
    :param options: the :class:`~sessionware.SessionOptions`, as for
        :class:`~sessionware.SessionMiddleware`: ``lock_mode``, ``on_error``,
        ``idle_timeout``, ``cookie``, ... The store check (``check_store``)
        runs here: a store that cannot serve raises its
        :class:`~sessionware.StoreError` at app creation.

    The session is ``environ["sessionware.session"]``, absent in lock mode
    ``none``. Works under threaded and forking servers alike: request threads
    do their own store I/O, one thread per process renews the leases of long
    requests, and a forked child opens its own connections.

    Integrations (Flask's :class:`~sessionware.flask.Sessionware`) set the
    class attributes in a subclass: :attr:`session_class`,
    :attr:`not_loaded_class`.
    """

    session_class: ClassVar[type[Session]] = Session
    """The class of the sessions handed to the app: a :class:`~sessionware.Session`."""

    not_loaded_class: ClassVar[type[NotLoadedSession]] = WSGINotLoadedSession
    """The class of the session under lock mode ``lazy`` until the app loads it."""

    def __init__(self, app: WSGIApplication, *, store: Store | SyncStore | None = None,
                 secret_key: str | Sequence[str],
                 **options: Unpack[SessionOptions]) -> None:
        settings = settings_from(options)
        self.app = app
        self.core = SyncSessionCore(
            _blocking(store if store is not None else store_from_env()), secret_key,
            config=settings.config, serializer=settings.serializer,
            session_class=self.session_class, on_event=settings.on_event,
            meter_provider=settings.meter_provider)
        self.select_mode = settings.lock_mode
        self.on_error = settings.on_error
        self.cookie_name = self.core.config.cookie.full_name
        if settings.check_store:
            self.core.check()

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        mode = self.select_mode(_scope(environ))
        if mode is LockMode.NONE:
            return self.app(environ, start_response)
        cookie = read_cookie(environ.get("HTTP_COOKIE", ""), self.cookie_name)
        https = environ.get("wsgi.url_scheme") == "https"
        if mode is LockMode.LAZY:
            tx = self.core.begin(cookie, https=https)
            environ[SESSION_KEY] = self.not_loaded_class()
        else:
            try:
                tx = self.core.open(cookie, mode, https=https)
            except SessionwareError as exc:
                return _send_error(start_response, respond_to(exc, self.on_error))
            environ[SESSION_KEY] = tx.session
        request = _Request(tx, start_response, self.on_error)
        environ[STATE_KEY] = request
        try:
            body = self.app(environ, request.start_response)
        except SessionwareError as exc:
            request.close()
            # The app's own load_session() failed (lock mode lazy) and it let the
            # error through: answer it as a failure before the app ran is answered.
            if exc is not tx.load_failure or request.started:
                raise
            return _send_error(start_response, respond_to(exc, self.on_error))
        except BaseException:
            request.close()
            raise
        return _Body(body, request)

    def close(self) -> None:
        """Close the store (at shutdown; the middleware must not be used after)."""
        self.core.close()


class HasEnviron(Protocol):
    """A framework's request object over a WSGI environ (werkzeug's, WebOb's, ...)."""

    @property
    def environ(self) -> WSGIEnvironment: ...


WSGIRequest = WSGIEnvironment | HasEnviron
"""What the functions of this module take as ``request``: the environ, or a
framework's request object that has it as ``.environ``."""


def load_session(request: WSGIRequest, mode: LockMode | str = LockMode.EXCLUSIVE) -> Session:
    """Load the request's session (lock mode ``lazy``) and return it, also as
    ``environ["sessionware.session"]``: ``exclusive`` locks it until the
    response starts, ``read`` takes the last committed snapshot. Loading twice
    returns the same session. A failure raises; left unhandled, the middleware
    answers it with its ``on_error`` response. A request without a session
    raises :class:`~sessionware.SessionNotLoaded`."""
    environ = _environ(request)
    session = _request_of(environ).tx.load(load_mode(mode))
    environ[SESSION_KEY] = session
    return session


def commit_session(request: WSGIRequest) -> None:
    """Commit the request's session now and release its lock: the synchronous
    form of ``await session.commit()``, for long (streamed) responses.

    Call it before the response starts: Set-Cookie, if any, goes out with the
    response headers. Later changes raise :class:`~sessionware.SessionClosed`;
    a store failure raises here, as the async form does. A request without a
    loaded session raises :class:`~sessionware.SessionNotLoaded`.
    """
    _request_of(_environ(request)).commit_early()


def uses_session(mode: LockMode | str = LockMode.EXCLUSIVE) -> Callable[[Handler], Handler]:
    """Decorate a handler whose first argument is the request (the environ,
    as a WSGI app's is, or a request object with ``.environ``) so that its
    session is loaded in ``mode`` before it runs."""
    chosen = load_mode(mode)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def with_session(request: WSGIRequest, *args: Any, **kwargs: Any) -> Any:
            load_session(request, chosen)
            return handler(request, *args, **kwargs)

        return cast(Handler, with_session)

    return decorate


def error_response(request: WSGIRequest, exc: SessionwareError) -> ErrorResponse:
    """The response the middleware's ``on_error`` gives for ``exc``, for
    frameworks that answer a failed :func:`load_session` themselves."""
    return respond_to(exc, _request_of(_environ(request)).on_error)


def _environ(request: WSGIRequest) -> WSGIEnvironment:
    return request if isinstance(request, dict) else request.environ


def _request_of(environ: WSGIEnvironment) -> _Request:
    return request_state(environ, _Request, "WSGISessionMiddleware")


def abandon_session(request: WSGIRequest) -> None:
    """Abandon the request's session: nothing of it is saved, and its lock is
    released now (the store's record stays as it was).

    For frameworks that catch a failed request's exception and answer with
    their own error page: the middleware cannot tell that page from a success.
    A session already committed stays committed. No-op without a session, so
    an error hook may call it for every request.
    """
    state = _environ(request).get(STATE_KEY)
    if isinstance(state, _Request):
        state.abandon()


class _Request:
    """The driver's state for one request: when to commit, and what to send."""

    __slots__ = ("_closed", "_start", "abandoned", "cookies", "on_error", "refusal", "started",
                 "tx")

    def __init__(self, tx: SyncSessionTransaction, start_response: StartResponse,
                 on_error: ErrorHandler) -> None:
        self.tx = tx
        self._start = start_response
        self.on_error = on_error
        self.started = False
        self.cookies: list[str] | None = None  # the Set-Cookie values, once committed
        self.abandoned = False
        self.refusal: ErrorResponse | None = None  # sent instead of the app's response
        self._closed = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None, /) -> Write:
        if self.refusal is not None:
            return _ignore  # the app's response was replaced already
        self.started = True
        if exc_info is not None:
            self.abandon()  # the app reports an error: its request saves nothing
        if not self.abandoned:
            try:
                self.cookies = self.tx.commit(_status_code(status))
            except SessionwareError as exc:
                self.refusal = respond_to(exc, self.on_error)
                self.close()  # nothing more can be saved: unlock now, not at the body's end
                _send_error(self._start, self.refusal)
                return _ignore
        headers = [*headers, *(("Set-Cookie", cookie) for cookie in self.cookies or ())]
        return self._start(status, headers, exc_info)

    def commit_early(self) -> None:
        self.tx.commit_early()
        self.cookies = self.tx.commit()  # idempotent: that commit's Set-Cookie values

    def abandon(self) -> None:
        if self.cookies is None:
            self.abandoned = True
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.tx.close()


class _Body:
    """The app's response iterable, wrapped: the error response replaces it if
    the commit failed, and closing it ends the request's session."""

    __slots__ = ("_app_closed", "_body", "_chunks", "_request")

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request
        self._app_closed = False
        self._chunks = self._iterate()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def _iterate(self) -> Iterator[bytes]:
        request = self._request
        if request.refusal is None:
            for chunk in self._body:  # may call start_response on its first step
                if request.refusal is not None:
                    break
                yield chunk
        if request.refusal is not None:
            self._close_app()
            yield request.refusal.body

    def _close_app(self) -> None:
        if not self._app_closed:
            self._app_closed = True
            close = getattr(self._body, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        try:
            self._close_app()
        finally:
            self._request.close()


def _blocking(store: Store | SyncStore) -> SyncStore:
    """The store's blocking face: WSGI servers run a request on one thread."""
    if isinstance(store, Store):
        return store.sync()
    return store


def _scope(environ: WSGIEnvironment) -> dict[str, Any]:
    """The ASGI-scope-like view of ``environ`` that lock-mode rules read."""
    return {
        "type": "http",
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": _text(environ.get("PATH_INFO", "")) or "/",
        "root_path": _text(environ.get("SCRIPT_NAME", "")),
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": [(key[5:].replace("_", "-").lower().encode("latin-1"),
                     value.encode("latin-1"))
                    for key, value in environ.items() if key.startswith("HTTP_")],
        "environ": environ,
    }


def _text(wsgi_string: str) -> str:
    """A WSGI "bytes as latin-1" string, decoded as the UTF-8 it was sent as."""
    return wsgi_string.encode("latin-1").decode("utf-8", "replace")


def _status_code(status: str) -> int:
    """The number of a WSGI status line ("500 Internal Server Error")."""
    try:
        return int(status.split(" ", 1)[0])
    except ValueError:
        return 500  # not a status line: the server will fail this response anyway


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _send_error(start_response: StartResponse, response: ErrorResponse) -> list[bytes]:
    start_response(_status_line(response.status), response.all_headers())
    return [response.body]


def _ignore(data: bytes) -> None:
    """The ``write`` of a replaced response: the app's bytes go nowhere."""

