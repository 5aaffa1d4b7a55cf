"""Configuration mistakes are refused when the middleware is built, with a
message that names the option and what it accepts, not at the first request."""

from __future__ import annotations

from typing import Any

import pytest

from sessionware import ConfigurationError, CookieOptions, SessionMiddleware
from sessionware.cookies import CookieSigner
from sessionware.stores import MemoryStore

KEY = "k" * 32
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never run
    raise AssertionError("the app must not be reached")


def _middleware(**options: Any) -> SessionMiddleware:
    options.setdefault("secret_key", KEY)
    return SessionMiddleware(_app, store=MemoryStore(), **options)


# -- cookie options ---------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/\r\nX-Injected: 1", "/a;b", "/a\x00", "/a\x7f", "/\tx", "app", "", "/é",
])
def test_a_path_outside_the_cookie_grammar_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="path") as info:
        CookieOptions(path=path)
    assert "/" in str(info.value)


def test_a_path_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="path"):
        CookieOptions(path=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("domain", [
    "example.com\r\nX-Injected: 1", "example.com; Secure", "exa mple.com", "a\x00.com",
    "bücher.de", "a..b", "example.com.", "-a.com", "a-.com", "a_b.com", ".", "..a",
    "a" * 64 + ".com",
])
def test_a_domain_that_is_not_a_host_name_is_refused(domain: str) -> None:
    with pytest.raises(ConfigurationError, match="domain") as info:
        CookieOptions(domain=domain)
    assert "letters, digits, hyphens" in str(info.value)


def test_a_domain_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="domain"):
        CookieOptions(domain=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_age", [-5, -1, True, False, 1.5, "60"])
def test_a_max_age_that_is_not_a_non_negative_int_is_refused(max_age: object) -> None:
    with pytest.raises(ConfigurationError, match="max_age") as info:
        CookieOptions(max_age=max_age)  # type: ignore[arg-type]
    assert "non-negative" in str(info.value)


def test_bad_cookie_options_are_refused_through_the_middleware() -> None:
    with pytest.raises(ConfigurationError, match="path"):
        _middleware(cookie=CookieOptions(path="/\r\nX-Injected: 1"))


# -- secret keys ------------------------------------------------------------------


def test_a_missing_secret_key_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match="secret key is required") as info:
        _middleware(secret_key=None)
    assert MAKE_KEY in str(info.value)


def test_a_missing_secret_key_is_refused_by_the_signer() -> None:
    with pytest.raises(ConfigurationError, match="secret key is required"):
        CookieSigner(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["test-secret", "k" * 31, "é" * 15])
def test_a_short_secret_key_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(ConfigurationError, match="32 bytes") as info:
        _middleware(secret_key=key)
    assert MAKE_KEY in str(info.value)
    assert key not in str(info.value)


def test_every_key_of_a_rotation_list_is_checked_and_named_by_position() -> None:
    with pytest.raises(ConfigurationError, match=r"secret_key\[1\]") as info:
        _middleware(secret_key=[KEY, "s3cr3t-short"])
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigurationError, match=r"secret_key\[2\]"):
        CookieSigner([KEY, KEY, 42])  # type: ignore[list-item]


def test_a_key_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        CookieSigner("\ud800" * 32)  # itsdangerous could not encode it to sign


@pytest.mark.parametrize("keys", [42, object()])
def test_secret_keys_of_the_wrong_kind_are_refused(keys: object) -> None:
    with pytest.raises(ConfigurationError, match="secret_key"):
        CookieSigner(keys)  # type: ignore[arg-type]
