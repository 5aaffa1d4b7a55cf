"""Ids, signing and Set-Cookie rendering (sessionware/cookies.py): pure functions."""

from __future__ import annotations

import hashlib

import pytest
from itsdangerous import Signer

from sessionware import ConfigurationError, CookieOptions
from sessionware._async.admin import session_reference
from sessionware.cookies import (
    _SALT,
    CookieSigner,
    is_cookie_value,
    new_session_id,
    read_cookie,
    store_key,
)

OLD, NEW, OTHER, KEY = ("old-" * 8, "new-" * 8, "other-" * 6, "k" * 32)  # 32 bytes or more


def test_ids_are_256_bits_and_unique() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 43 for i in ids)  # 32 bytes, URL-safe base64


def test_store_key_is_a_hash_not_the_id() -> None:
    session_id = new_session_id()
    assert session_id not in store_key(session_id)
    assert len(store_key(session_id)) == 64


def test_signatures_are_checked_and_rotated() -> None:
    session_id = new_session_id()
    old = CookieSigner(OLD).sign(session_id)
    rotated = CookieSigner([NEW, OLD])
    assert rotated.unsign(old) == session_id
    assert CookieSigner(NEW).unsign(rotated.sign(session_id)) == session_id
    assert CookieSigner(OTHER).unsign(old) is None


@pytest.mark.parametrize("value", ["", ".", "abc", "x.y", "a" * 43, "é.é"])
def test_malformed_values_are_refused(value: str) -> None:
    assert CookieSigner(KEY).unsign(value) is None


def test_a_signed_value_that_is_not_an_id_is_refused() -> None:
    signer = CookieSigner(KEY)
    assert signer.unsign(signer.sign("not-an-id")) is None


def test_read_cookie_takes_the_named_cookie() -> None:
    header = 'a=1; session=abc; session=second; b="q"'
    assert read_cookie(header, "session") == "abc"
    assert read_cookie(header, "b") == "q"
    assert read_cookie(header, "missing") is None


def test_defaults_are_httponly_lax_and_secure_on_https_only() -> None:
    options = CookieOptions()
    plain = options.set_cookie("v", https=False)
    assert plain == "session=v; Path=/; HttpOnly; SameSite=Lax"
    assert options.set_cookie("v", https=True).endswith("; Secure")


def test_host_prefix_partitioned_and_expiry() -> None:
    options = CookieOptions(host_prefix=True, partitioned=True, max_age=60)
    header = options.set_cookie("v", https=False)
    assert header.startswith("__Host-session=v; Path=/; Max-Age=60")
    assert "Secure" in header and header.endswith("Partitioned")
    assert "Max-Age=0" in options.expire_cookie(https=True)


@pytest.mark.parametrize("kwargs", [
    {"host_prefix": True, "domain": "example.com"},
    {"host_prefix": True, "path": "/app"},
    {"host_prefix": True, "secure": False},
    {"samesite": "none", "secure": False},
    {"partitioned": True, "secure": False},
    {"name": "bad name"},
    {"samesite": "sometimes"},
])
def test_impossible_cookie_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        CookieOptions(**kwargs)  # type: ignore[arg-type]


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        CookieSigner("")
    with pytest.raises(ConfigurationError):
        CookieSigner([])
    with pytest.raises(ConfigurationError):
        CookieSigner(b"k" * 32)  # type: ignore[arg-type]  # the Flask integration decodes bytes


def test_keys_of_32_utf8_bytes_are_enough() -> None:
    CookieSigner("é" * 16)  # 16 characters, 32 bytes
    CookieSigner(["n" * 40, KEY])


@pytest.mark.parametrize("path", ["/", "/app", "/a b/c-d_e.f~!$&'()*+,=:@%20"])
def test_paths_of_the_cookie_grammar_are_kept(path: str) -> None:
    assert f"Path={path};" in CookieOptions(path=path).set_cookie("v", https=False)


@pytest.mark.parametrize("domain", ["example.com", ".example.com", "a-b.c0.example",
                                    "localhost", "xn--bcher-kva.de", "127.0.0.1"])
def test_host_names_are_kept(domain: str) -> None:
    assert f"Domain={domain};" in CookieOptions(domain=domain).set_cookie("v", https=False)


@pytest.mark.parametrize("max_age", [None, 0, 3600])
def test_max_age_none_or_non_negative_is_kept(max_age: int | None) -> None:
    assert CookieOptions(max_age=max_age).max_age == max_age


def test_only_the_issued_spelling_of_a_cookie_verifies() -> None:
    """itsdangerous decodes signatures leniently; found by tests/test_cookie_fuzz.py."""
    signer = CookieSigner(KEY)
    for _ in range(200):
        session_id = new_session_id()
        assert signer.unsign(signer.sign(session_id)) == session_id
    value = signer.sign(session_id)
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = digits.index(value[-1])
    spellings = [
        *(value[:-1] + digits[last + low] for low in (1, 2, 3)),  # the 2 unused bits
        value + "=", value + "==", value + "==AAAA", value[:50] + "!" + value[50:],
        value[:50] + "é" + value[50:], value[:50] + " " + value[50:],
        value.replace("-", "+").replace("_", "/"),
    ]
    for spelling in spellings:
        if spelling != value:
            assert signer.unsign(spelling) is None, spelling


def test_the_admin_tools_read_cookie_values_as_the_signer_does() -> None:
    """One parser of ``<id>.<signature>``: a spelling the signer never issues
    is no cookie value for the admin tools either (not a bad signature)."""
    signer = CookieSigner(KEY)
    session_id = new_session_id()
    value = signer.sign(session_id)
    assert is_cookie_value(value)
    assert session_reference(value, signer) == store_key(session_id)
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unissued = value[:-1] + digits[digits.index(value[-1]) + 1]  # a low bit set
    assert not is_cookie_value(unissued)
    with pytest.raises(ValueError, match="not a session"):
        session_reference(unissued, signer)
    with pytest.raises(ValueError, match="does not verify"):
        session_reference(CookieSigner(NEW).sign(session_id), signer)


def test_cookies_are_itsdangerous_signer_values_under_every_key() -> None:
    """The format is itsdangerous's (cookies issued before stay valid): its
    Signer, with our salt and key derivation, makes and accepts what we do."""
    new, old = "n" * 40, "o" * 40
    session_id = new_session_id()

    def signer(*keys: str) -> Signer:  # itsdangerous signs with its list's last key
        return Signer(list(keys), salt=_SALT, key_derivation="hmac",
                      digest_method=hashlib.sha256)

    ours = CookieSigner([new, old])
    assert ours.sign(session_id) == signer(old, new).sign(session_id).decode()
    assert signer(old, new).unsign(ours.sign(session_id)) == session_id.encode()
    for key in (new, old):
        assert ours.unsign(signer(key).sign(session_id).decode()) == session_id
    assert ours.unsign(signer("x" * 40).sign(session_id).decode()) is None
