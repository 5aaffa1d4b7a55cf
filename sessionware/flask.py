"""Flask integration: ``flask.session`` is the locked session.

::

    import os
    from flask import Flask, session
    from sessionware.flask import Sessionware
    from sessionware.stores import SQLiteStore

    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ["SESSION_SECRET"]  # 32+ random bytes
    Sessionware(app, store=SQLiteStore("sessions.db"))

:class:`Sessionware` wraps ``app.wsgi_app`` in
:class:`~sessionware.wsgi.WSGISessionMiddleware` and installs a session
interface that hands Flask the session the middleware loaded (a
:class:`FlaskSession`: a :class:`~sessionware.Session` and a Flask
``SessionMixin``) and saves nothing itself: the middleware commits as the
response starts. A view that raises saves nothing, whether Flask propagates the
exception or answers with its 500 page (``got_request_exception``). HTTP errors
raised on purpose (``abort(404)``) are responses like any other: the session is
saved, as Starlette's ``HTTPException`` is.

Configuration read from ``app.config`` when :meth:`Sessionware.init_app` runs:

* ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``, for rotation) when no
  ``secret_key`` is passed.
* ``SESSION_COOKIE_NAME``, ``_DOMAIN``, ``_PATH`` (else ``APPLICATION_ROOT``),
  ``_HTTPONLY``, ``_PARTITIONED``; ``SESSION_COOKIE_SECURE = True`` sets Secure
  always and ``SESSION_COOKIE_SAMESITE`` sets SameSite. Flask's defaults for
  those two (``False`` and ``None``) are weaker than sessionware's, so they
  leave sessionware's in force: Secure on https, SameSite=Lax. A ``cookie=``
  option replaces all of this.
* ``PERMANENT_SESSION_LIFETIME``, ``session.permanent`` and
  ``SESSION_REFRESH_EACH_REQUEST`` are not used: the server-side idle timeout
  (``idle_timeout``, 20 minutes by default) decides how long a session lives,
  and the cookie lasts for the browser session unless ``CookieOptions.max_age``
  says otherwise. Pass ``idle_timeout=app.permanent_session_lifetime.total_seconds()``
  to keep Flask's number.

Early release for streamed responses: call :func:`commit_session` (with
Flask's ``request``) in the view before returning the streaming response.

Lock only what uses the session: with ``lock_mode="lazy"`` a request loads no
session until its view asks, by the :func:`uses_session` decorator or a call to
:func:`load_session` (``load_session(request, "read")``); every other view
costs no store trip and never waits behind the user's other requests. These
are the names and shapes of every driver's (:mod:`sessionware.loading`)::

    Sessionware(app, store=..., lock_mode="lazy")

    @app.post("/cart")
    @uses_session()              # locked while the view runs
    def add(): ...

    @app.get("/cart")
    @uses_session("read")        # a snapshot: no lock, no wait
    def show(): ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar, Unpack, cast

try:
    from flask import Flask, Request, Response, abort
    from flask import request as current_request
    from flask.globals import request_ctx
    from flask.sessions import NullSession, SessionInterface, SessionMixin
    from flask.signals import got_request_exception
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sessionware.flask needs Flask: pip install sessionware[flask]") from exc

from sessionware._async.stores.base import Store
from sessionware._sync.stores.base import SyncStore
from sessionware.config import SessionOptions, settings_from
from sessionware.cookies import CookieOptions, check_secret_keys
from sessionware.exceptions import ConfigurationError, SessionNotLoaded, SessionwareError
from sessionware.loading import NotLoadedSession, load_mode
from sessionware.modes import LockMode
from sessionware.session import Session
from sessionware.urls import ENV_VAR, store_from_url
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware, abandon_session, error_response
from sessionware.wsgi import commit_session as _commit_environ
from sessionware.wsgi import load_session as _load_environ

__all__ = ["FlaskNotLoadedSession", "FlaskSession", "Sessionware", "SessionwareInterface",
           "UnavailableSession", "commit_session", "load_session", "uses_session"]

View = TypeVar("View", bound=Callable[..., Any])


class FlaskSession(Session, SessionMixin):
    """The locked session as Flask sees it: a :class:`~sessionware.Session`
    (so ``regenerate()``, ``invalidate()`` and the change rules apply) that is
    also a Flask ``SessionMixin``."""


class FlaskNotLoadedSession(NotLoadedSession, SessionMixin):
    """``flask.session`` under lock mode ``lazy`` until the view loads it."""

    accessed = False  # nothing was read: no Vary: Cookie
    how_to_load = ("declare the view with @uses_session() (sessionware.flask), or call "
                   "sessionware.flask.load_session(request) first")


class UnavailableSession(NullSession):
    """What ``flask.session`` is in a request without a sessionware session:
    readable and empty, as Flask's own ``NullSession``; changes raise
    :class:`~sessionware.SessionNotLoaded` (a ``RuntimeError``, as Flask's
    would be) with the reason."""

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise SessionNotLoaded(
            "no session in this request: its lock mode is 'none', or it did not "
            "pass through the sessionware middleware (Flask's session_transaction() "
            "and test_request_context() do not)")

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail


class SessionwareInterface(SessionInterface):
    """Hands Flask the session the middleware loaded; saves nothing itself."""

    null_session_class = UnavailableSession

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        session = request.environ.get(SESSION_KEY)
        return session if isinstance(session, SessionMixin) else None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if session.accessed:  # as Flask's own interface: caches must key on the cookie
            response.vary.add("Cookie")


def load_session(request: Request, mode: LockMode | str = LockMode.EXCLUSIVE) -> FlaskSession:
    """Load the request's session (lock mode ``lazy``) and make it
    ``flask.session``: ``exclusive`` locks it until the response starts,
    ``read`` takes the last committed snapshot. ``request`` is Flask's
    ``request``. A store failure aborts the request with the middleware's
    ``on_error`` response (503 by default); a request without a session
    raises :class:`~sessionware.SessionNotLoaded`."""
    try:
        session = _load_environ(request, mode)
    except SessionNotLoaded:
        raise  # the app's mistake, not the store's: no on_error response for it
    except SessionwareError as exc:
        answer = error_response(request, exc)
        abort(Response(answer.body, answer.status, answer.all_headers()))
    _hand_to_flask(session)
    return cast(FlaskSession, session)


def _hand_to_flask(session: Session) -> None:
    """Make ``session`` what ``flask.session`` is for the rest of the request."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    # Flask 3.1 made RequestContext.session a property over _session.
    name = "_session" if isinstance(getattr(type(ctx), "session", None), property) else "session"
    setattr(ctx, name, session)


def uses_session(mode: LockMode | str = LockMode.EXCLUSIVE) -> Callable[[View], View]:
    """Decorate a view so that its session is loaded in ``mode`` before it runs
    (place it below ``@app.route``)."""
    chosen = load_mode(mode)

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):
            @functools.wraps(view)
            async def with_session_async(*args: Any, **kwargs: Any) -> Any:
                load_session(current_request, chosen)
                return await view(*args, **kwargs)
            return cast(View, with_session_async)

        @functools.wraps(view)
        def with_session(*args: Any, **kwargs: Any) -> Any:
            load_session(current_request, chosen)
            return view(*args, **kwargs)
        return cast(View, with_session)

    return decorate


def commit_session(request: Request) -> None:
    """Commit the request's session now and release its lock, before a long
    response (``stream_with_context``, downloads). ``request`` is Flask's
    ``request``. Later changes raise :class:`~sessionware.SessionClosed`; a
    request without a loaded session raises
    :class:`~sessionware.SessionNotLoaded`."""
    _commit_environ(request)


class _FlaskMiddleware(WSGISessionMiddleware):
    """The WSGI middleware handing Flask its own session classes."""

    session_class = FlaskSession
    not_loaded_class = FlaskNotLoadedSession


class Sessionware:
    """Locked sessions for a Flask app: ``Sessionware(app, store=...)``, or
    ``Sessionware(store=...)`` and later ``init_app(app)``.

    :param app: the Flask app, or ``None`` to call :meth:`init_app` later.
    :param store: where sessions live, e.g. ``SQLiteStore("sessions.db")``
        (default: the store the ``SESSIONWARE_STORE_URL`` config key names):
        the same classes as for ASGI; the middleware takes the store's sync
        face (:meth:`~sessionware.stores.Store.sync`).
    :param secret_key: signs the cookie (a list rotates keys: the first signs,
        all verify); default: ``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS``.
        Bytes keys are accepted.
    :param options: the :class:`~sessionware.SessionOptions`, as for
        :class:`~sessionware.wsgi.WSGISessionMiddleware`, checked here; without
        ``cookie``, the cookie follows the ``SESSION_COOKIE_*`` config. The
        store check (``check_store``) runs in :meth:`init_app`: a store that
        cannot serve fails the app's creation with its reason.
    """

    def __init__(self, app: Flask | None = None, *, store: Store | SyncStore | None = None,
                 secret_key: str | bytes | Sequence[str | bytes] | None = None,
                 **options: Unpack[SessionOptions]) -> None:
        settings_from(options)  # a mistake fails here, not at init_app
        self._store = store
        self._secret_key = secret_key
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, store: Store | SyncStore | None = None,
                 secret_key: str | bytes | Sequence[str | bytes] | None = None,
                 **options: Unpack[SessionOptions]) -> WSGISessionMiddleware:
        """Install the middleware and session interface on ``app``; arguments
        given here win over the constructor's. Returns the middleware (also in
        ``app.extensions["sessionware"]``)."""
        merged = SessionOptions(**self._options)
        merged.update(options)
        merged.setdefault("cookie", _cookie_options(app.config))
        if store is None:
            store = self._store
        if store is None:
            if not app.config.get(ENV_VAR):
                raise ConfigurationError(
                    "Sessionware needs a store: pass store=SQLiteStore('sessions.db'), or set "
                    f"app.config['{ENV_VAR}'] (e.g. 'sqlite:///sessions.db')")
            store = store_from_url(app.config[ENV_VAR])
        given_key = secret_key if secret_key is not None else self._secret_key
        middleware = _FlaskMiddleware(app.wsgi_app, store=store,
                                      secret_key=_secret_keys(given_key, app.config), **merged)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = SessionwareInterface()
        got_request_exception.connect(_abandon, app, weak=False)
        app.extensions["sessionware"] = middleware
        return middleware


def _abandon(sender: Flask, **extra: Any) -> None:
    """A view raised: Flask answers with its error page, which must save nothing."""
    abandon_session(current_request)


def _cookie_options(config: dict[str, Any]) -> CookieOptions:
    """:class:`~sessionware.CookieOptions` from Flask's ``SESSION_COOKIE_*`` config."""
    options: dict[str, Any] = {
        "name": config.get("SESSION_COOKIE_NAME") or "session",
        "path": config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
        "domain": config.get("SESSION_COOKIE_DOMAIN") or None,
        "httponly": bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
        "partitioned": bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
    }
    if config.get("SESSION_COOKIE_SECURE"):
        options["secure"] = True
    samesite = config.get("SESSION_COOKIE_SAMESITE")
    if samesite:
        options["samesite"] = str(samesite).lower()
    return CookieOptions(**options)


def _secret_keys(given: str | bytes | Sequence[str | bytes] | None,
                 config: dict[str, Any]) -> list[str]:
    """The signing keys, checked under the names the app set them by: a short
    key from the config is ``app.config['SECRET_KEY']`` in the error, not
    the ``secret_key[0]`` it becomes in the middleware."""
    if given is None:
        if not config.get("SECRET_KEY"):
            raise ConfigurationError("Sessionware needs a secret key: set "
                                     "app.config['SECRET_KEY'] or pass secret_key=")
        keys = [config["SECRET_KEY"], *(config.get("SECRET_KEY_FALLBACKS") or ())]
        names = ["app.config['SECRET_KEY']",
                 *(f"app.config['SECRET_KEY_FALLBACKS'][{i}]" for i in range(len(keys) - 1))]
    elif isinstance(given, (str, bytes)):
        keys, names = [given], ["secret_key"]
    else:
        keys = list(given)
        names = [f"secret_key[{i}]" for i in range(len(keys))]
    text = [key.decode("latin-1") if isinstance(key, bytes) else key for key in keys]
    check_secret_keys(text, names)
    return text
