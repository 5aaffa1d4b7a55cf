"""The settings: read when Django loads the middleware; a wrong one fails
there with an ImproperlyConfigured that names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.admin.checks import _contains_subclass
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

from sessionware import ConfigurationError, CookieOptions
from sessionware.django import SessionMiddleware, UsesSessionMixin, uses_session
from sessionware.stores import MemoryStore


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse()


@pytest.fixture
def memory() -> Iterator[MemoryStore]:
    store = MemoryStore()
    yield store
    store.sync().close()


def start(**overrides: Any) -> SessionMiddleware:
    """Load the middleware under these settings, as Django's handler does."""
    with override_settings(**overrides):
        return SessionMiddleware(ok)


@pytest.mark.parametrize(("options", "named"), [
    ({"LOCK_MODE": "sometimes"}, 'SESSIONWARE["LOCK_MODE"]'),
    ({"IDLE_TIMEOUT": -1}, 'SESSIONWARE["IDLE_TIMEOUT"]'),
    ({"LOCK_TIMOUT": 3}, "did you mean 'LOCK_TIMEOUT'?"),
    ({"ON_ERROR": "503"}, 'SESSIONWARE["ON_ERROR"]'),
    ({"COOKIE": {"name": "s"}}, 'SESSIONWARE["COOKIE"]'),
])
def test_a_wrong_option_names_itself(memory: MemoryStore, options: dict[str, Any],
                                     named: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=named.replace("[", r"\[")):
        start(SESSIONWARE={"STORE": memory, **options})


@pytest.mark.parametrize(("sessionware", "named"), [
    ({"STORE_URL": "nosuch://here"}, 'SESSIONWARE["STORE_URL"]'),
    ({"STORE": "sqlite:///x.db"}, 'SESSIONWARE["STORE"]'),
    ({"STORE": MemoryStore(), "STORE_URL": "memory://"}, '"STORE" or "STORE_URL"'),
    ({}, "SESSIONWARE_STORE_URL"),
])
def test_a_wrong_store_names_the_setting(sessionware: dict[str, Any], named: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSIONWARE_STORE_URL", raising=False)
    with pytest.raises(ImproperlyConfigured, match=named.replace("[", r"\[")):
        start(SESSIONWARE=sessionware)


def test_a_store_that_cannot_serve_fails_the_start_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/sessions.db"
    with pytest.raises(ImproperlyConfigured, match=r'SESSIONWARE\["STORE_URL"\]: the session'):
        start(SESSIONWARE={"STORE_URL": url})


@pytest.mark.parametrize(("overrides", "named"), [
    ({"SECRET_KEY": "short"}, "SECRET_KEY is 5 bytes"),
    ({"SECRET_KEY_FALLBACKS": ["old"]}, r"SECRET_KEY_FALLBACKS\[0\]"),
    ({"SESSION_COOKIE_DOMAIN": "bad domain"}, "SESSION_COOKIE_DOMAIN"),
    ({"SESSION_COOKIE_SAMESITE": "Sometimes"}, "SESSION_COOKIE_SAMESITE"),
    ({"SESSION_COOKIE_PATH": "no-slash"}, "SESSION_COOKIE_PATH"),
    ({"SESSION_COOKIE_AGE": -5}, "SESSION_COOKIE_AGE"),
    ({"SESSION_ENGINE": "django.contrib.sessions.backends.db"}, "SESSION_ENGINE"),
    ({"SESSIONWARE": {"LOCK_MODE": "lazy"}}, "CSRF_USE_SESSIONS"),
    ({"SESSIONWARE": ["STORE_URL"]}, "SESSIONWARE must be a dict"),
])
def test_a_wrong_django_setting_names_itself(memory: MemoryStore, overrides: dict[str, Any],
                                             named: str) -> None:
    overrides.setdefault("SESSIONWARE", {})
    if isinstance(overrides["SESSIONWARE"], dict):
        overrides["SESSIONWARE"] = {"STORE": memory, **overrides["SESSIONWARE"]}
    with pytest.raises(ImproperlyConfigured, match=named):
        start(**overrides)


def cookie_of(**overrides: Any) -> CookieOptions:
    cookie: CookieOptions = start(**overrides).sessions.driver.config.cookie
    return cookie


def test_django_cookie_settings_map_onto_the_cookie(memory: MemoryStore) -> None:
    base = {"SESSIONWARE": {"STORE": memory}}
    default = cookie_of(**base)
    assert (default.name, default.secure, default.samesite, default.max_age) == (
        "sessionid", None, "lax", None)  # Django's weaker defaults leave sessionware's
    assert start(**base).sessions.driver.config.idle_timeout == 1200
    strict = cookie_of(**base, SESSION_COOKIE_SECURE=True, SESSION_COOKIE_SAMESITE="Strict",
                       SESSION_COOKIE_NAME="sid", SESSION_COOKIE_PATH="/app",
                       SESSION_COOKIE_DOMAIN=".example.com")
    assert (strict.secure, strict.samesite, strict.name, strict.path, strict.domain) == (
        True, "strict", "sid", "/app", ".example.com")
    assert cookie_of(**base, SESSION_COOKIE_SAMESITE=None).samesite == "lax"
    aged = start(**base, SESSION_COOKIE_AGE=3600).sessions.driver.config
    assert (aged.cookie.max_age, aged.idle_timeout) == (3600, 3600)
    closing = cookie_of(**base, SESSION_COOKIE_AGE=3600, SESSION_EXPIRE_AT_BROWSER_CLOSE=True)
    assert closing.max_age is None
    mine = CookieOptions(name="__sid", host_prefix=True)
    assert cookie_of(SESSIONWARE={"STORE": memory, "COOKIE": mine}) is mine


def test_the_admin_finds_a_session_middleware() -> None:
    assert _contains_subclass("django.contrib.sessions.middleware.SessionMiddleware",
                              settings.MIDDLEWARE)  # admin.E410 is not raised


def test_a_view_mode_is_checked_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="'exclusive', 'read' or 'none'"):
        uses_session("lazy")

    class Wrong(UsesSessionMixin):
        session_mode = "sometimes"

    with pytest.raises(ConfigurationError, match=r"Wrong\.session_mode"):
        Wrong.as_view()
