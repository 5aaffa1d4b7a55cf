"""The session engine: ``SESSION_ENGINE = "sessionware.django.engine"``.

``request.session`` is a :class:`SessionStore`, a ``SessionBase`` like
Django's own engines', so ``contrib.auth``, ``contrib.messages``,
``CSRF_USE_SESSIONS`` and other apps use it unchanged. Its data is a
:class:`~sessionware.Session` (the store's JSON; Django's
``SESSION_SERIALIZER`` is not used), saved by the middleware as the
response starts: ``save()`` in a view does nothing more.

Outside a request (Django's test client, a shell, ``clearsessions``) each
call is a short transaction of its own (:mod:`sessionware.django.standalone`).
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from sessionware.django import standalone
from sessionware.django.conf import sessions
from sessionware.django.links import Link
from sessionware.session import Session

__all__ = ["SessionStore"]

_NOT_GIVEN: Any = object()


class SessionStore(SessionBase):  # type: ignore[misc]
    """``request.session``: Django's session API over a locked
    :class:`~sessionware.Session`.

    * ``session_key`` is the value of the session cookie (the signed id), or
      ``None`` while the session has none: a new session gets its key when
      the response commits it, and ``cycle_key()`` and ``flush()`` set it
      to ``None`` until then.
    * ``cycle_key()`` is :meth:`~sessionware.Session.regenerate`: the data
      and the lock stay, a new id is issued at the commit and the old one dies.
    * ``flush()`` empties the session and ends its id at the commit: what
      the request writes after it (a login's user) goes to a new id, and a
      session left empty is deleted and its cookie expired
      (:meth:`~sessionware.Session.invalidate`).
    * Changes in ``read`` mode raise :class:`~sessionware.SessionClosed`.
    * ``set_expiry()`` sets the cookie's lifetime when a cookie is issued;
      the server keeps a session for the configured ``IDLE_TIMEOUT`` since
      its last use.

    The ``a``-methods (``aget``, ``aset``, ``acycle_key``, ``aflush``...)
    are Django's, for ``async def`` views.
    """

    def __init__(self, session_key: str | None = None) -> None:
        self._key: str | None = None
        self._link: Link | None = None  # set by the middleware; None outside a request
        self._data: Session | None = None
        self._flushed = False
        super().__init__(session_key)

    # -- the key: the cookie's value --------------------------------------------------

    def _get_key(self) -> str | None:
        return self._key

    def _set_key(self, value: str | None) -> None:
        self._key = value if isinstance(value, str) and value else None

    session_key = property(_get_key)
    _session_key = property(_get_key, _set_key)

    # -- loading: at the first access ---------------------------------------------------

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        if self._data is None:
            if self._link is not None:
                self._data = self._link.load()
            else:
                self._data = Session(standalone.read(sessions().sync_core, self._key))
        return self._data

    async def _aget_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        if self._data is None:
            if self._link is not None:
                self._data = await self._link.aload()
            else:
                self._data = Session(await standalone.aread(sessions().async_core, self._key))
        return self._data

    _session = property(_get_session)

    def load(self) -> dict[str, Any]:
        return self._get_session()

    async def aload(self) -> dict[str, Any]:
        return await self._aget_session()

    # -- what Django's API does here ----------------------------------------------------

    def pop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        session = self._session
        if key not in session and default is not _NOT_GIVEN:
            return default  # nothing to change: fine in a read-only session too
        self.modified = True
        return session.pop(key) if default is _NOT_GIVEN else session.pop(key, default)

    async def apop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        await self._aget_session()
        return self.pop(key, default)

    def clear(self) -> None:
        self._session.clear()
        self.modified = True

    def is_empty(self) -> bool:
        return not self._key and not self._data

    def get_session_cookie_age(self) -> int:
        """The server-side idle timeout: how long an unused session lives."""
        return int(sessions().driver.config.idle_timeout)

    def bind_user(self, user_id: str | None) -> None:
        """Bind the session to ``user_id`` (:meth:`~sessionware.Session.bind_user`);
        done at each ``login`` by the ``user_logged_in`` signal, so that
        ``revoke_user`` finds the session."""
        self._session.bind_user(user_id)
        self.modified = True

    def cycle_key(self) -> None:
        data = self._session
        if self._link is None:
            self._key = standalone.write(sessions().sync_core, self._key, dict(data),
                                         regenerate=True)
            return
        self._regenerate(data)

    async def acycle_key(self) -> None:
        data = await self._aget_session()
        if self._link is None:
            self._key = await standalone.awrite(sessions().async_core, self._key, dict(data),
                                                regenerate=True)
            return
        self._regenerate(data)

    def _regenerate(self, data: Session) -> None:
        if not data.regenerated:
            data.regenerate()
        self._key = None
        self.modified = True

    def flush(self) -> None:
        if self._link is None:
            if self._key is not None:
                standalone.delete(sessions().sync_core, self._key)
            self._forget()
            return
        self._end(self._session)

    async def aflush(self) -> None:
        if self._link is None:
            if self._key is not None:
                await standalone.adelete(sessions().async_core, self._key)
            self._forget()
            return
        self._end(await self._aget_session())

    def _forget(self) -> None:
        self._data = Session()
        self._key = None
        self.modified = True

    def _end(self, data: Session) -> None:
        data.clear()
        self._regenerate(data)
        self._flushed = True

    def save(self, must_create: bool = False) -> None:
        """Outside a request, write the session now. In a request, nothing:
        the middleware saves it as the response starts."""
        if self._link is None:
            self._key = standalone.write(sessions().sync_core, self._key, dict(self._session))

    async def asave(self, must_create: bool = False) -> None:
        if self._link is None:
            data = dict(await self._aget_session())
            self._key = await standalone.awrite(sessions().async_core, self._key, data)

    def create(self) -> None:
        """A new key for the session's data (Django's ``create``): in a
        request, :meth:`cycle_key`; outside, a new session now."""
        if self._link is None:
            self._key = standalone.write(sessions().sync_core, None, dict(self._session))
        else:
            self.cycle_key()

    async def acreate(self) -> None:
        if self._link is None:
            data = dict(await self._aget_session())
            self._key = await standalone.awrite(sessions().async_core, None, data)
        else:
            await self.acycle_key()

    def delete(self, session_key: str | None = None) -> None:
        """End the session ``session_key`` names (a cookie value), now; without
        it, this session (in a request: as :meth:`flush`)."""
        if session_key is None:
            self.flush()
        else:
            standalone.delete(sessions().sync_core, session_key)

    async def adelete(self, session_key: str | None = None) -> None:
        if session_key is None:
            await self.aflush()
        else:
            await standalone.adelete(sessions().async_core, session_key)

    def exists(self, session_key: str) -> bool:
        return standalone.exists(sessions().sync_core, session_key)

    async def aexists(self, session_key: str) -> bool:
        return await standalone.aexists(sessions().async_core, session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Purge the expired sessions from the store now (``manage.py
        clearsessions``); stores also drop them by themselves."""
        core = sessions().sync_core
        core.ensure_ready()
        core.store.purge_expired()

    @classmethod
    async def aclear_expired(cls) -> None:
        core = sessions().async_core
        await core.ensure_ready()
        await core.store.purge_expired()

    # -- for the middleware --------------------------------------------------------------

    def _before_commit(self) -> Session | None:
        """The loaded session, ready to commit: one flushed and left empty is
        deleted (its cookie expired); ``None`` when nothing was loaded."""
        data = self._data
        if data is not None and self._flushed and not data and not data.invalidated:
            data.invalidate()
        return data
