"""Django integration: ``request.session`` is the locked session.

``settings.py``::

    MIDDLEWARE = [
        ...,
        "sessionware.django.SessionMiddleware",   # where Django's SessionMiddleware was
        ...,
    ]
    SESSION_ENGINE = "sessionware.django.engine"
    SESSIONWARE = {"STORE_URL": "sqlite:///sessions.db"}   # or "redis://...", "STORE": ...

Django's views, ``contrib.auth`` (``login`` cycles the key, ``logout``
flushes), ``contrib.messages`` and ``CSRF_USE_SESSIONS`` use it unchanged:
``request.session`` is a ``SessionBase``
(:class:`~sessionware.django.engine.SessionStore`) over a
:class:`~sessionware.Session`, locked for the request and saved as the
response leaves the middleware.

The settings (:mod:`sessionware.django.conf` reads them):

* ``SESSIONWARE``: ``"STORE_URL"`` (a :func:`~sessionware.store_from_url`
  URL) or ``"STORE"`` (a store object); without either, the
  ``SESSIONWARE_STORE_URL`` environment variable. Then any
  :class:`~sessionware.SessionOptions` in upper case: ``"LOCK_MODE"``,
  ``"IDLE_TIMEOUT"``, ``"LOCK_TIMEOUT"``, ``"ON_ERROR"``, ``"COOKIE"`` (a
  :class:`~sessionware.CookieOptions`, instead of ``SESSION_COOKIE_*``), ...
* ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` sign the cookie (32 bytes or
  more each).
* ``SESSION_COOKIE_NAME``, ``_DOMAIN``, ``_PATH``, ``_HTTPONLY``;
  ``SESSION_COOKIE_SECURE = True`` sets Secure always and
  ``SESSION_COOKIE_SAMESITE`` sets SameSite, while Django's weaker defaults
  (``False``; ``None``) leave sessionware's: Secure on https, SameSite=Lax.
  ``SESSION_COOKIE_AGE``, when the project sets it, is the idle timeout
  and the cookie's Max-Age (none with ``SESSION_EXPIRE_AT_BROWSER_CLOSE``);
  unset, sessionware's defaults hold: 20 minutes idle, a cookie for the
  browser session.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sessionware.django needs Django: pip install sessionware[django]") from exc

from sessionware.django import signals  # noqa: F401 - connects the receivers
from sessionware.django.engine import SessionStore
from sessionware.django.middleware import SessionMiddleware
from sessionware.django.views import UsesSessionMixin, uses_session

__all__ = ["SessionMiddleware", "SessionStore", "UsesSessionMixin", "uses_session"]
