"""What stands behind ``request.session`` in a request: where its data comes
from at the first access, by the lock mode the request was given.

Under WSGI the session is loaded at its first access, on the request's
thread, through the sync face (:class:`Lazy`), as Django loads its own.
Under ASGI the middleware has loaded it on the async face before anything
else ran (:class:`Loaded`): sync code (sync views, ``MessageMiddleware``,
``CsrfViewMiddleware``) runs in threads there, where loading would block or
need the event loop driven from the thread.
"""

from __future__ import annotations

from typing import NoReturn

from sessionware._sync.core import SyncSessionTransaction
from sessionware.exceptions import SessionNotLoaded
from sessionware.modes import LockMode
from sessionware.session import Session, SessionState

__all__ = ["Lazy", "Link", "Loaded", "NoSession", "NotDeclared"]


class Link:
    """The source of a request's session data."""

    __slots__ = ("abandoned",)

    def __init__(self) -> None:
        self.abandoned = False  # the view raised: nothing of the session is saved

    def load(self) -> Session:
        raise NotImplementedError

    async def aload(self) -> Session:
        return self.load()


class Loaded(Link):
    """A session loaded before the view ran (ASGI)."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def load(self) -> Session:
        return self.session


class Lazy(Link):
    """Loaded in ``mode`` at the first access, on the sync face (WSGI). An
    ``async def`` view under WSGI runs in a loop of its own (``async_to_sync``),
    which serves that view alone: its ``aget`` loads the same way."""

    __slots__ = ("mode", "tx")

    def __init__(self, tx: SyncSessionTransaction, mode: LockMode) -> None:
        super().__init__()
        self.tx = tx
        self.mode = mode

    def load(self) -> Session:
        failure = self.tx.load_failure
        if failure is not None:  # once per request: an error page reading it fails the same
            raise failure
        return self.tx.load(self.mode)


class NotDeclared(Link):
    """Lock mode ``lazy``, and a view that declares no session."""

    __slots__ = ()

    def load(self) -> NoReturn:
        raise SessionNotLoaded(
            'the session is not loaded in this request: SESSIONWARE["LOCK_MODE"] is '
            "'lazy' and the view declares no session: decorate it with @uses_session() "
            "or give its class UsesSessionMixin (sessionware.django)")


class Unavailable(Session):
    """The session of a request in lock mode ``none``: empty; changes raise
    :class:`~sessionware.SessionNotLoaded` with the reason."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(state=SessionState.READ_ONLY)

    def _refuse(self) -> NoReturn:
        raise SessionNotLoaded(
            "no session in this request: its lock mode is 'none' (uses_session('none'), "
            'or SESSIONWARE["LOCK_MODE"])')


class NoSession(Link):
    """Lock mode ``none``: the view reads an empty session."""

    __slots__ = ()

    def load(self) -> Session:
        return Unavailable()
