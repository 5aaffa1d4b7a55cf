"""Configuration mistakes are refused when the middleware is built, with a
message that names the option and what it accepts, not at the first request."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from sessionware import (
    ConfigurationError,
    CookieOptions,
    LockMode,
    Rule,
    SessionConfig,
    SessionMiddleware,
    SessionOptions,
)
from sessionware.config import DriverSettings
from sessionware.cookies import CookieSigner
from sessionware.modes import mode_selector
from sessionware.stores import MemoryStore

KEY = "k" * 32
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never run
    raise AssertionError("the app must not be reached")


def _middleware(**options: Any) -> SessionMiddleware:
    """The middleware, or the configuration error it fails its startup with
    (it is made at the first call under Starlette, see test_startup_check)."""
    options.setdefault("secret_key", KEY)
    options.setdefault("store", MemoryStore())
    middleware = SessionMiddleware(_app, **options)
    if middleware.misconfigured is not None:
        raise middleware.misconfigured
    return middleware


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


# -- lock modes -------------------------------------------------------------------

MODES_LISTED = ("'exclusive'", "'read'", "'none'")


def _assert_lists_the_modes(error: pytest.ExceptionInfo[ConfigurationError], bad: str) -> None:
    message = str(error.value)
    assert repr(bad) in message
    assert all(mode in message for mode in MODES_LISTED), message


def test_a_misspelt_lock_mode_names_it_and_lists_the_modes() -> None:
    with pytest.raises(ConfigurationError, match="lock_mode") as info:
        _middleware(lock_mode="exclusiv")
    _assert_lists_the_modes(info, "exclusiv")


def test_a_rule_with_a_bad_mode_is_refused_when_made() -> None:
    with pytest.raises(ConfigurationError) as info:
        Rule("reed", paths=["/n"])
    _assert_lists_the_modes(info, "reed")


@pytest.mark.parametrize("field", ["paths", "methods"])
def test_a_rule_given_one_string_instead_of_a_list_is_refused(field: str) -> None:
    # tuple("/static") would be "/", "s", ...: a rule matching every path
    with pytest.raises(ConfigurationError, match=field):
        Rule("none", **{field: "/static"})


async def test_a_callable_returning_a_bad_mode_fails_the_request() -> None:
    middleware = _middleware(lock_mode=lambda scope: "bogus")
    scope = {"type": "http", "path": "/", "method": "GET", "headers": []}
    with pytest.raises(ConfigurationError, match="lock_mode") as info:
        await middleware(scope, _never_called, _never_called)
    _assert_lists_the_modes(info, "bogus")


async def _never_called(*args: Any) -> Any:  # pragma: no cover
    raise AssertionError("the middleware must fail before talking to the server")


def test_a_lock_mode_of_the_wrong_kind_is_refused() -> None:
    scope = {"type": "http", "path": "/static/x", "method": "GET"}
    assert mode_selector("read")(scope) is LockMode.READ  # every documented kind still works
    assert mode_selector(LockMode.NONE)(scope) is LockMode.NONE
    assert mode_selector(lambda s: "none")(scope) is LockMode.NONE
    assert mode_selector([Rule("none", paths=["/static"])])(scope) is LockMode.NONE
    assert mode_selector(iter([Rule("read", methods=["get"])]))(scope) is LockMode.READ
    for lock_mode in (42, None, 1.5, [Rule("read"), "none"], [LockMode.READ], b"read"):
        with pytest.raises(ConfigurationError, match="lock_mode"):
            _middleware(lock_mode=lock_mode)


# -- session options ---------------------------------------------------------------

def test_an_unknown_option_names_itself_and_lists_the_options() -> None:
    with pytest.raises(ConfigurationError) as caught:
        _middleware(lock_timout=5)
    message = str(caught.value)
    assert "'lock_timout' (did you mean 'lock_timeout'?)" in message
    for option in ("store", "secret_key", "lock_mode", "on_error", "idle_timeout", "cookie"):
        assert option in message
    assert "SessionConfig" not in message  # no internal class names


def test_the_options_are_declared_once_and_every_one_is_used() -> None:
    """SessionOptions is the declaration; the checked, completed forms
    (SessionConfig for the core, DriverSettings for the drivers) hold each
    option once, and none other."""
    config = {f.name for f in fields(SessionConfig)}
    driver = {f.name for f in fields(DriverSettings)} - {"config"}
    assert not config & driver
    assert config | driver == SessionOptions.__optional_keys__
    assert not SessionOptions.__required_keys__


def test_the_configuration_page_documents_every_option() -> None:
    page = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for option in sorted(SessionOptions.__optional_keys__ | {"store", "secret_key"}):
        assert f"| `{option}` |" in page, option


@pytest.mark.parametrize(("option", "value"), [
    ("lock_timeout", 0), ("lock_timeout", "5"), ("lease_ttl", -1.0), ("idle_timeout", None),
    ("store_timeout", True), ("absolute_lifetime", 0), ("refresh_after", -1),
    ("max_waiting", 0), ("max_waiting", 2.5), ("max_size", "big"), ("commit_on_5xx", "yes"),
    ("cookie", {"name": "s"}), ("on_error", None), ("on_error", "default"),
    ("on_event", 42), ("serializer", object()), ("check_store", "yes"),
])
def test_a_bad_option_value_names_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        _middleware(**{option: value})


def test_a_store_that_is_not_a_store_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="store must be a sessionware Store"):
        _middleware(store="sqlite:///x.db")


def test_refresh_after_is_the_one_name_of_the_slide_throttle() -> None:
    """None means a tenth of ``idle_timeout``, resolved by the core under the
    option's own name (it was ``refresh_interval`` there)."""
    assert _middleware(idle_timeout=600).core.refresh_after == 60
    assert _middleware(idle_timeout=600, refresh_after=0).core.refresh_after == 0
    assert not hasattr(SessionConfig(), "refresh_interval")
