"""Session: the mapping handed to the application. No I/O.

It is a ``dict`` so that ``request.session``, ``json.dumps(session)`` and every
library that treats ``scope["session"]`` as a dict keep working. What changed is
found by comparing serialized bytes at commit time, so nested changes such as
``session["cart"].append(item)`` are saved too, without tracking every call.

Direct changes to a session that will not be saved (one opened in ``read``
mode, one already committed or invalidated, one whose id a concurrent login
retired) raise :class:`~sessionware.SessionClosed` instead of being dropped in
silence; nested changes to such a session are found by the core at commit.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

from sessionware.exceptions import SessionClosed

__all__ = ["USER_KEY", "Session", "SessionState"]

USER_KEY = "sessionware.user"
"""The key of the session's data that holds the user id :meth:`Session.bind_user`
bound it to (reserved: an app writes it only through ``bind_user``). The core
keeps each user's index of sessions (:mod:`sessionware._async.users`) from it."""


class SessionState(enum.Enum):
    OPEN = "open"  # changes will be committed
    READ_ONLY = "read-only"  # a snapshot: read mode, nothing is saved
    COMMITTED = "committed"  # committed (early) or abandoned; nothing more is saved
    RETIRED = "retired"  # its id was retired by a regeneration; nothing is saved


_REFUSALS = {
    SessionState.READ_ONLY: "the session is read-only in this request (lock mode 'read'): "
                            "changes would not be saved",
    SessionState.COMMITTED: "the session was already committed (or abandoned with a 5xx "
                            "response): changes would not be saved",
    SessionState.RETIRED: "this request carries a session id that a concurrent request "
                          "retired with regenerate() (a login): its changes would not be "
                          "saved, and the new session is not open to it",
}
_INVALIDATED = "the session was invalidated in this request: changes would not be saved"


def _guarded(name: str) -> Callable[..., Any]:
    method = getattr(dict, name)

    def guarded(self: Session, *args: Any, **kwargs: Any) -> Any:
        if self._state is not SessionState.OPEN or self._invalidated:
            self._refuse()
        return method(self, *args, **kwargs)

    guarded.__name__ = name
    guarded.__doc__ = method.__doc__
    return guarded


class Session(dict[str, Any]):
    """The session of one request: a dict, plus :meth:`regenerate`,
    :meth:`invalidate` and :meth:`commit`."""

    __slots__ = ("_commit_early", "_invalidated", "_regenerated", "_state")

    def __init__(self, data: dict[str, Any] | None = None,
                 state: SessionState = SessionState.OPEN) -> None:
        super().__init__(data or ())
        self._state = state
        self._regenerated = False
        self._invalidated = False
        self._commit_early: Callable[[], Awaitable[None]] | None = None

    __setitem__ = _guarded("__setitem__")
    __delitem__ = _guarded("__delitem__")
    __ior__ = _guarded("__ior__")
    clear = _guarded("clear")
    pop = _guarded("pop")
    popitem = _guarded("popitem")
    setdefault = _guarded("setdefault")
    update = _guarded("update")

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def regenerated(self) -> bool:
        return self._regenerated

    @property
    def invalidated(self) -> bool:
        return self._invalidated

    @property
    def user_id(self) -> str | None:
        """The user id this session is bound to (:meth:`bind_user`), or ``None``."""
        user = self.get(USER_KEY)
        return user if isinstance(user, str) else None

    def bind_user(self, user_id: str | None) -> None:
        """Bind the session to ``user_id`` (at login), so that
        :meth:`SessionAdmin.revoke_user <sessionware.SessionAdmin.revoke_user>`
        finds and revokes it with the user's other sessions; ``None`` unbinds
        it. Stored in the data under :data:`USER_KEY`; the user's index is
        updated at commit, before the session is written. Call
        :meth:`regenerate` too at a login."""
        if user_id is None:
            self.pop(USER_KEY, None)
            return
        if not isinstance(user_id, str) or not user_id:
            raise TypeError(f"a user id is a non-empty str, not {user_id!r}")
        self[USER_KEY] = user_id

    def regenerate(self) -> None:
        """Move the data to a new session id at commit, and retire the old one.

        Call it when the user's privileges change (login), so that an id an
        attacker planted or saw before cannot ride the new privileges.
        """
        self._check_open()
        self._regenerated = True

    def invalidate(self) -> None:
        """Delete the session from the store at commit and expire the cookie
        (logout). The session is empty from now on, and changing it raises
        :class:`~sessionware.SessionClosed`: they would be deleted with it."""
        self._check_open()
        dict.clear(self)
        self._invalidated = True

    async def commit(self) -> None:
        """Commit the session now and release its lock, before the response ends.

        For long responses (streaming, downloads) that should not hold the lock.
        The Set-Cookie header, if any, still goes out with the response headers,
        so call this before the response starts. Later changes raise
        :class:`~sessionware.SessionClosed`.
        """
        self._check_commit()
        if self._commit_early is None:
            raise SessionClosed(
                "this session has no async commit: it is not managed by the ASGI middleware "
                "(under WSGI call sessionware.wsgi.commit_session(environ); in Flask, "
                "sessionware.flask.commit_session(request))")
        await self._commit_early()

    def _check_commit(self) -> None:
        """Refuse an early commit of a session that is not open."""
        if self._state is not SessionState.OPEN:
            self._refuse()

    def _check_open(self) -> None:
        if self._state is not SessionState.OPEN or self._invalidated:
            self._refuse()

    def _refuse(self) -> None:
        raise SessionClosed(_REFUSALS.get(self._state, _INVALIDATED))

    def __repr__(self) -> str:
        return f"Session({dict.__repr__(self)}, state={self._state.value})"
