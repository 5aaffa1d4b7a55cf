"""The middleware: each request's session, locked, and committed as the
response leaves the middleware (before a streamed body's first byte).

Under WSGI (Django's sync handler) it runs on the request's thread with the
sync face of the core; under ASGI (the async handler) on the event loop with
the async face. Neither blocks a loop nor drives one from a thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

from sessionware.django.conf import ENGINE, sessions
from sessionware.django.engine import SessionStore
from sessionware.django.http import error_response, scope_of, set_cookies, vary_on_cookie
from sessionware.django.links import Lazy, Link, Loaded, NoSession, NotDeclared
from sessionware.django.views import view_mode
from sessionware.exceptions import SessionwareError
from sessionware.modes import LockMode
from sessionware.responses import respond_to

__all__ = ["SessionMiddleware"]

GetResponse = Callable[[HttpRequest], Any]


class SessionMiddleware(DjangoSessionMiddleware):  # type: ignore[misc]
    """Locked sessions for Django: in ``MIDDLEWARE``, where
    ``django.contrib.sessions.middleware.SessionMiddleware`` was (a subclass
    of it, so the admin's check finds it), with
    ``SESSION_ENGINE = "sessionware.django.engine"``.

    The settings are read when Django loads the middleware (at start-up):
    a wrong one raises ``ImproperlyConfigured`` naming it, and the store is
    checked (``SESSIONWARE["CHECK_STORE"]``): one that cannot serve fails
    the start-up with its reason.

    Each request gets its session in the lock mode of its view
    (:func:`~sessionware.django.uses_session`,
    :class:`~sessionware.django.UsesSessionMixin`), else of
    ``SESSIONWARE["LOCK_MODE"]``. Under WSGI it is loaded at its first
    access, as Django's own; under ASGI before the request goes on (sync
    code runs in threads there, and loading needs the event loop). A
    response commits it: a 5xx response, or a view that raised, saves
    nothing; every way out releases the lock. A store failure answers as
    ``SESSIONWARE["ON_ERROR"]`` says (503; 409 for a lost lease; 500 when
    the outcome is unknown) instead of the app's response.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        if settings.SESSION_ENGINE != ENGINE:
            raise ImproperlyConfigured(
                f'SESSION_ENGINE must be "{ENGINE}" with sessionware.django.SessionMiddleware, '
                f"not {settings.SESSION_ENGINE!r}")
        super().__init__(get_response)
        self.sessions = sessions()
        self.cookie_name = self.sessions.driver.config.cookie.full_name
        given = self.sessions.options.get("lock_mode", LockMode.EXCLUSIVE)
        # one mode for every request: no scope to build for it
        self.fixed_mode = LockMode(given) if isinstance(given, str) else None

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        mode = self._mode(request)
        if mode not in (LockMode.EXCLUSIVE, LockMode.READ):
            request.session = self._session(request, _unloaded(mode))
            return self.get_response(request)
        core = self.sessions.sync_core
        tx = core.begin(request.COOKIES.get(self.cookie_name), https=request.is_secure())
        store = request.session = self._session(request, Lazy(tx, mode))
        try:
            try:
                response = self.get_response(request)
            except SessionwareError as exc:  # Django's error page read the session too
                if exc is not tx.load_failure:
                    raise
                return error_response(respond_to(exc, self.sessions.driver.on_error))
            failure = tx.load_failure
            if failure is not None and response.status_code == 500:
                return self._refuse(response, failure)  # loading failed in the view
            if not self._commits(store, response):
                return response
            try:
                cookies = tx.commit(response.status_code)
            except SessionwareError as exc:
                return self._refuse(response, exc)
            return self._answer(response, store, cookies)
        finally:
            tx.close()

    async def __acall__(self, request: HttpRequest) -> Any:
        mode = self._mode(request)
        if mode not in (LockMode.EXCLUSIVE, LockMode.READ):
            request.session = self._session(request, _unloaded(mode))
            return await self._next(request)
        core = self.sessions.async_core
        tx = core.begin(request.COOKIES.get(self.cookie_name), https=request.is_secure())
        try:
            try:
                session = await tx.load(mode)
            except SessionwareError as exc:
                return error_response(respond_to(exc, self.sessions.driver.on_error))
            store = request.session = self._session(request, Loaded(session))
            response = await self._next(request)
            if not self._commits(store, response):
                return response
            try:
                cookies = await tx.commit(response.status_code)
            except SessionwareError as exc:
                return self._refuse(response, exc)
            return self._answer(response, store, cookies)
        finally:
            await tx.close()  # shielded: a client gone away (cancelled) releases too

    def _next(self, request: HttpRequest) -> Awaitable[HttpResponseBase]:
        response: Awaitable[HttpResponseBase] = self.get_response(request)
        return response

    def _mode(self, request: HttpRequest) -> LockMode:
        """The view's own mode, else the one ``LOCK_MODE`` chooses."""
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        declared = view_mode(match.func) if match is not None else None
        return declared or self.fixed_mode or self.sessions.driver.lock_mode(scope_of(request))

    def _session(self, request: HttpRequest, link: Link) -> SessionStore:
        cookie = request.COOKIES.get(self.cookie_name)
        valid = cookie is not None and self.sessions.sync_core.signer.unsign(cookie) is not None
        store = SessionStore(cookie if valid else None)
        store._link = link
        return store

    @staticmethod
    def _commits(store: SessionStore, response: HttpResponseBase) -> bool:
        """Whether the response may commit the session: not when the view raised
        (Django answered with its error page), whatever that page's status."""
        assert store._link is not None
        if store._link.abandoned:
            return False
        store._before_commit()
        return True

    @staticmethod
    def _answer(response: HttpResponseBase, store: SessionStore,
                cookies: list[str]) -> HttpResponseBase:
        set_cookies(response, cookies, store)
        vary_on_cookie(response, store, cookies)
        return response

    def _refuse(self, response: HttpResponseBase, exc: SessionwareError) -> HttpResponseBase:
        """The ``on_error`` answer instead of ``response``, which is closed unsent."""
        response.close()
        return error_response(respond_to(exc, self.sessions.driver.on_error))


def _unloaded(mode: LockMode) -> Link:
    return NoSession() if mode is LockMode.NONE else NotDeclared()
