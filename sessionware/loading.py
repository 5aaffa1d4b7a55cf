"""Lock only what uses the session: lock mode ``lazy`` and the calls that load.

With ``SessionMiddleware(..., lock_mode="lazy")`` a request starts with
``request.session`` not loaded: no store trip, no lock, no wait behind the
user's other requests. A route that needs the session says so, and only that
route locks it::

    @uses_session()                      # Starlette: lock and load, then run
    async def add_to_cart(request): ...

    @uses_session("read")                # a snapshot: no lock, no wait
    async def show_cart(request): ...

    async def checkout(request):
        session = await load_session(request)   # or load it where it is needed
        ...

:func:`commit_session` commits it early, before a long response. Every
driver has these three names with these shapes, over its own request:
:mod:`sessionware.fastapi` (where ``uses_session`` is a dependency),
``sessionware.wsgi`` and ``sessionware.flask``. Touching a session that
was not loaded raises :class:`~sessionware.SessionNotLoaded` saying how to
load it, as does each of these calls in a request without a session. In the
other lock modes the session is loaded before the app runs and these calls
return it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, NoReturn, TypeVar

from starlette.concurrency import run_in_threadpool

from sessionware._async.core import SessionTransaction
from sessionware.exceptions import ConfigurationError, SessionNotLoaded
from sessionware.modes import LockMode
from sessionware.session import Session

__all__ = ["STATE_KEY", "NotLoadedSession", "commit_session", "load_mode", "load_session",
           "request_state", "uses_session"]

STATE_KEY = "sessionware.state"
"""The scope (ASGI) or environ (WSGI) key under which the middleware keeps its
state of the request: the ASGI driver its session transaction, the WSGI
driver its per-request record. One key for both drivers."""

R = TypeVar("R")
T = TypeVar("T")


class NotLoadedSession(dict[str, Any]):
    """What ``scope["session"]`` is under lock mode ``lazy`` until the request
    loads it: reading or changing it raises :class:`~sessionware.SessionNotLoaded`
    with :attr:`how_to_load`, which each driver words with its own names."""

    __slots__ = ()

    how_to_load: ClassVar[str] = (
        "declare the route with @uses_session() or a sessionware.fastapi dependency, or "
        "call `await load_session(request)` first")

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise SessionNotLoaded(
            f"the session is not loaded in this request (lock mode 'lazy'): {self.how_to_load}")

    __getitem__ = __setitem__ = __delitem__ = __contains__ = __iter__ = __len__ = _refuse
    get = keys = values = items = pop = popitem = setdefault = update = clear = _refuse
    copy = __or__ = __ior__ = _refuse

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def request_state(mapping: MutableMapping[str, Any], kind: type[T], middleware: str) -> T:
    """The state ``middleware`` keeps of the request whose scope or environ is
    ``mapping``; :class:`~sessionware.SessionNotLoaded` when there is none:
    every driver says "no session in this request" with this one error."""
    state = mapping.get(STATE_KEY)
    if not isinstance(state, kind):
        raise SessionNotLoaded(
            f"no sessionware session in this request: {middleware} is not installed in front "
            "of it, or its lock mode for this request is 'none'")
    return state


def transaction_of(scope: MutableMapping[str, Any]) -> SessionTransaction:
    """The session transaction the middleware started for ``scope``'s request."""
    return request_state(scope, SessionTransaction, "SessionMiddleware")


def load_mode(mode: LockMode | str) -> LockMode:
    """``mode`` as a mode to load a session in, ``exclusive`` or ``read``; a
    :class:`~sessionware.ConfigurationError` for any other, at once (when a
    route is declared, not at its first request)."""
    if mode in (LockMode.EXCLUSIVE, LockMode.READ):
        return LockMode(mode)
    raise ConfigurationError(f"a session is loaded 'exclusive' or 'read', not {mode!r}")


async def load_session(request: Any, mode: LockMode | str = LockMode.EXCLUSIVE) -> Session:
    """Load the request's session and return it (also as ``request.session``):
    ``exclusive`` locks it until the response starts, ``read`` takes the last
    committed snapshot without lock or wait.

    ``request`` is a Starlette ``Request``/``WebSocket`` or an ASGI scope.
    Loading twice returns the same session. Failures raise as the middleware
    would answer them (:class:`~sessionware.LockTimeout`,
    :class:`~sessionware.StoreUnavailable`, ...); left unhandled, the middleware
    answers them with its ``on_error`` response. A request without a session
    raises :class:`~sessionware.SessionNotLoaded`.
    """
    scope = getattr(request, "scope", request)
    session = await transaction_of(scope).load(load_mode(mode))
    scope["session"] = session
    return session


async def commit_session(request: Any) -> None:
    """Commit the request's session now and release its lock, before a long
    (streamed) response: ``await request.session.commit()``, named as the
    WSGI and Flask forms are.

    ``request`` is a Starlette ``Request``/``WebSocket`` or an ASGI scope.
    Set-Cookie, if any, still goes out with the response headers, so call it
    before the response starts. Later changes raise
    :class:`~sessionware.SessionClosed`; a store failure raises here. A
    request without a loaded session raises
    :class:`~sessionware.SessionNotLoaded`.
    """
    await transaction_of(getattr(request, "scope", request)).commit_early()


def uses_session(mode: LockMode | str = LockMode.EXCLUSIVE) -> Callable[
        [Callable[..., Any]], Callable[..., Awaitable[Any]]]:
    """Decorate a Starlette endpoint (``async def`` or ``def`` taking the
    request) so that its session is loaded in ``mode`` before it runs."""
    chosen = load_mode(mode)

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        is_async = inspect.iscoroutinefunction(endpoint)

        @functools.wraps(endpoint)
        async def with_session(request: Any, *args: Any, **kwargs: Any) -> Any:
            await load_session(request, chosen)
            if is_async:
                return await endpoint(request, *args, **kwargs)
            return await run_in_threadpool(endpoint, request, *args, **kwargs)

        return with_session

    return decorate
