"""Django's settings, read once into what the middleware and the engine run on.

``SESSIONWARE`` holds sessionware's own options in upper case (``"LOCK_MODE"``
for ``lock_mode``), the store as ``"STORE_URL"`` or ``"STORE"``, and
``"COOKIE"`` to replace what ``SESSION_COOKIE_*`` say. The signing keys are
``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS``. Every value is checked here, one
setting at a time, so that a wrong one fails the start-up with an
``ImproperlyConfigured`` naming it (``SESSIONWARE["LOCK_MODE"]``).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.cookies import Morsel
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from sessionware._async.core import SessionCore
from sessionware._async.stores.base import Store
from sessionware._sync.core import SyncSessionCore
from sessionware.config import DriverSettings, SessionOptions, settings_from
from sessionware.cookies import CookieOptions, check_secret_keys
from sessionware.exceptions import ConfigurationError, SessionwareError
from sessionware.urls import ENV_VAR, store_from_env, store_from_url

__all__ = ["ENGINE", "SETTINGS", "Sessions", "cookie_options", "sessions"]

ENGINE = "sessionware.django.engine"
"""What ``SESSION_ENGINE`` must name beside the middleware."""

SETTINGS = "SESSIONWARE"
"""The name of the settings dict."""

_STORE_KEYS = ("STORE", "STORE_URL")
_OPTIONS = {name.upper(): name for name in SessionOptions.__optional_keys__}

# The settings the configuration is read from: a change (override_settings in
# tests) makes the next middleware read them again.
WATCHED = frozenset({SETTINGS, "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_ENGINE",
                     "SESSION_COOKIE_NAME", "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH",
                     "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
                     "SESSION_COOKIE_SAMESITE", "SESSION_COOKIE_AGE",
                     "SESSION_EXPIRE_AT_BROWSER_CLOSE", "CSRF_USE_SESSIONS"})


def setting(name: str, key: str | None = None) -> str:
    """How an error names a setting: ``SESSIONWARE["LOCK_MODE"]`` or ``SECRET_KEY``."""
    return f'{name}["{key}"]' if key is not None else name


def misconfigured(where: str, exc: Exception) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{where}: {exc}")


@dataclass
class Sessions:
    """One configuration: the store, the keys and the checked options, with
    a core for each face, made at its first use (the sync face for WSGI
    requests and for the engine's calls outside requests, the async face
    for ASGI requests)."""

    store: Store
    secret_keys: list[str]
    options: SessionOptions
    driver: DriverSettings = field(init=False)

    def __post_init__(self) -> None:
        self.driver = settings_from(self.options)

    @cached_property
    def sync_core(self) -> SyncSessionCore:
        driver = self.driver
        return SyncSessionCore(self.store.sync(), self.secret_keys, config=driver.config,
                               serializer=driver.serializer, on_event=driver.on_event,
                               meter_provider=driver.meter_provider)

    @cached_property
    def async_core(self) -> SessionCore:
        driver = self.driver
        return SessionCore(self.store, self.secret_keys, config=driver.config,
                           serializer=driver.serializer, on_event=driver.on_event,
                           meter_provider=driver.meter_provider)


_lock = threading.Lock()
_current: Sessions | None = None


def sessions() -> Sessions:
    """The configuration the settings give now, read at the first call and
    after a change of the settings it is read from."""
    global _current
    with _lock:
        if _current is None:
            made = read_settings()
            core = made.sync_core  # made here, once: request threads share it
            if made.driver.check_store:
                try:
                    core.check()
                except SessionwareError as exc:
                    raise ImproperlyConfigured(f"{_store_setting()}: the session store cannot "
                                               f"serve: {exc}") from exc
            _current = made
        return _current


def forget() -> None:
    """Read the settings again at the next :func:`sessions` (they changed).
    The store of the configuration before is left to its owner: requests
    under way may still use it."""
    global _current
    with _lock:
        _current = None


def read_settings() -> Sessions:
    """The configuration of the settings as they are, checked."""
    given = getattr(settings, SETTINGS, {})
    if not isinstance(given, Mapping):
        raise ImproperlyConfigured(f"{SETTINGS} must be a dict, not {type(given).__name__}")
    options = _options(given)
    if options.get("lock_mode") == "lazy" and settings.CSRF_USE_SESSIONS:
        raise ImproperlyConfigured(
            f'{setting(SETTINGS, "LOCK_MODE")} is "lazy", but CSRF_USE_SESSIONS reads the '
            "session in every request (CsrfViewMiddleware, and Django's error pages): use "
            'LOCK_MODE rules ("none" for the paths without a session) instead')
    options.setdefault("cookie", cookie_options())
    if settings.is_overridden("SESSION_COOKIE_AGE") and "idle_timeout" not in options:
        # the project's session age: the server-side idle timeout too
        options["idle_timeout"] = settings.SESSION_COOKIE_AGE
    keys = secret_keys()
    store = _store(given)
    try:
        return Sessions(store, keys, options)
    except ConfigurationError as exc:  # each option passed alone: SESSION_COOKIE_AGE's
        raise misconfigured("SESSION_COOKIE_AGE", exc) from exc


def _options(given: Mapping[str, Any]) -> SessionOptions:
    """The options of ``SESSIONWARE``, each checked alone so that its error names it."""
    options: dict[str, Any] = {}
    for key, value in given.items():
        if key in _STORE_KEYS:
            continue
        name = _OPTIONS.get(key) if isinstance(key, str) else None
        if name is None:
            known = sorted([*_STORE_KEYS, *_OPTIONS])
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ImproperlyConfigured(f"{setting(SETTINGS, str(key))}: unknown option{hint}; "
                                       "the options are: " + ", ".join(known))
        try:
            settings_from(cast(SessionOptions, {name: value}))
        except ConfigurationError as exc:
            raise misconfigured(setting(SETTINGS, key), exc) from exc
        options[name] = value
    if "cookie" in options:
        _check_cookie_for_django(options["cookie"], setting(SETTINGS, "COOKIE"))
    return cast(SessionOptions, options)


def _store_setting() -> str:
    given = getattr(settings, SETTINGS, {})
    for key in _STORE_KEYS:
        if key in given:
            return setting(SETTINGS, key)
    return ENV_VAR


def _store(given: Mapping[str, Any]) -> Store:
    if "STORE" in given and "STORE_URL" in given:
        raise ImproperlyConfigured(f'{SETTINGS}: give "STORE" or "STORE_URL", not both')
    where = _store_setting()
    try:
        if "STORE" in given:
            store = given["STORE"]
            if not isinstance(store, Store):
                raise ConfigurationError(
                    f"a sessionware store (e.g. SQLiteStore('sessions.db')), not {store!r}")
            return store
        if "STORE_URL" in given:
            return store_from_url(given["STORE_URL"])
        return store_from_env()
    except ConfigurationError as exc:
        if where == ENV_VAR and "STORE" not in given:
            raise ImproperlyConfigured(
                f'no session store: set {setting(SETTINGS, "STORE_URL")} (e.g. '
                f'"sqlite:///sessions.db") or {setting(SETTINGS, "STORE")}, or the '
                f"{ENV_VAR} environment variable ({exc})") from exc
        raise misconfigured(where, exc) from exc


def secret_keys() -> list[str]:
    """``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS``, checked under those names."""
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    names = ["SECRET_KEY", *(f"SECRET_KEY_FALLBACKS[{i}]" for i in range(len(keys) - 1))]
    try:
        check_secret_keys(keys, names)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
    return keys


def cookie_options() -> CookieOptions:
    """:class:`~sessionware.CookieOptions` from the ``SESSION_COOKIE_*`` settings.

    Django's defaults that are weaker than sessionware's leave sessionware's
    in force: ``SESSION_COOKIE_SECURE = False`` (the default) sets Secure on
    https requests, and ``SESSION_COOKIE_SAMESITE = None`` or ``False`` keeps
    SameSite=Lax. ``SESSION_COOKIE_AGE`` gives the cookie a Max-Age only when
    the project sets it (and ``SESSION_EXPIRE_AT_BROWSER_CLOSE`` is off):
    sessionware's default cookie lasts for the browser session.
    """
    fields: dict[str, tuple[str, Any]] = {
        "name": ("SESSION_COOKIE_NAME", settings.SESSION_COOKIE_NAME),
        "path": ("SESSION_COOKIE_PATH", settings.SESSION_COOKIE_PATH),
        "domain": ("SESSION_COOKIE_DOMAIN", settings.SESSION_COOKIE_DOMAIN),
        "httponly": ("SESSION_COOKIE_HTTPONLY", bool(settings.SESSION_COOKIE_HTTPONLY)),
    }
    if settings.SESSION_COOKIE_SECURE:
        fields["secure"] = ("SESSION_COOKIE_SECURE", True)
    samesite = settings.SESSION_COOKIE_SAMESITE
    if samesite:
        fields["samesite"] = ("SESSION_COOKIE_SAMESITE", str(samesite).lower())
    if settings.is_overridden("SESSION_COOKIE_AGE") and not (
            settings.SESSION_EXPIRE_AT_BROWSER_CLOSE):
        fields["max_age"] = ("SESSION_COOKIE_AGE", settings.SESSION_COOKIE_AGE)
    for key, (name, value) in fields.items():  # each alone: the error names the setting
        try:
            CookieOptions(**{key: value})
        except ConfigurationError as exc:
            raise misconfigured(name, exc) from exc
    try:
        return CookieOptions(**{key: value for key, (_, value) in fields.items()})
    except ConfigurationError as exc:
        raise misconfigured("SESSION_COOKIE_*", exc) from exc


def _check_cookie_for_django(cookie: CookieOptions, where: str) -> None:
    if cookie.partitioned and "partitioned" not in Morsel._reserved:  # type: ignore[attr-defined]
        raise ImproperlyConfigured(f"{where}: Django's response cookies cannot say "
                                   "Partitioned before Python 3.14")
