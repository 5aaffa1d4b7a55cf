"""Session ids, signed cookie values, store keys and Set-Cookie headers.

Pure functions and value objects: no I/O, no request state.

* A session id is 256 bits from :mod:`secrets`, URL-safe base64 (43 characters).
* The cookie carries ``<id>.<signature>``, an HMAC-SHA256 in itsdangerous's
  format, under the keys its ``Signer`` derives. Key rotation: a list of
  secrets signs with the first and accepts any.
* The store key is the SHA-256 of the id, so whoever reads the store cannot
  present its keys as cookies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from itsdangerous import Signer

from sessionware.exceptions import ConfigurationError

__all__ = ["CookieOptions", "CookieSigner", "check_secret_keys", "is_cookie_value",
           "new_session_id", "read_cookie", "store_key"]

_ID_BYTES = 32
# <id>.<HMAC-SHA256>, each 32 bytes in unpadded URL-safe base64. itsdangerous
# decodes the signature leniently (it skips characters outside the alphabet and
# ignores what follows padding, and 43 characters hold 2 bits more than 32
# bytes), so many spellings of one cookie would verify. Only the one we issue
# is accepted: its last character is a base64 digit whose 2 low bits are 0.
_COOKIE_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_SALT = "sessionware.session-id"
# An HMAC key needs as much entropy as the digest: 256 bits.
_MIN_KEY_BYTES = 32
_MAKE_KEY = ('make one with: python -c "import secrets; print(secrets.token_urlsafe(32))" '
             "and keep it out of the source (read it from the environment, e.g. "
             "os.environ[\"SESSION_SECRET\"])")


def new_session_id() -> str:
    """A fresh, unguessable session id (256 bits)."""
    return secrets.token_urlsafe(_ID_BYTES)


def store_key(session_id: str) -> str:
    """The key a store files the session under: never the id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def is_cookie_value(value: str) -> bool:
    """Whether ``value`` is spelt as the session cookie values sessionware
    issues (``<id>.<signature>``); the signature is not checked. The one
    parser of that format: the signer and the admin tools both use it."""
    return _COOKIE_PATTERN.fullmatch(value) is not None


def _signature(keyed: hmac.HMAC, session_id: str) -> bytes:
    """What itsdangerous's ``Signer`` appends: the HMAC-SHA256 (``keyed``: an
    HMAC of the key alone, copied), URL-safe base64 without padding."""
    mac = keyed.copy()
    mac.update(session_id.encode())
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")


class CookieSigner:
    """Signs session ids for the cookie and checks them on the way back.

    :param secret_keys: one secret, or several for rotation: the first signs, any
        of them verifies. Put a new key first, and drop the old one once every
        cookie it signed has expired.
    """

    def __init__(self, secret_keys: str | Sequence[str]) -> None:
        keys = _checked_keys(secret_keys)
        # itsdangerous derives the HMAC keys, once here; each request copies
        # an HMAC keyed already, a third of the CPU of its Signer's checks.
        signer = Signer(keys, salt=_SALT, key_derivation="hmac", digest_method=hashlib.sha256)
        self._keys = [hmac.new(signer.derive_key(key), digestmod=hashlib.sha256)
                      for key in keys]  # the first signs

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{_signature(self._keys[0], session_id).decode()}"

    def unsign(self, cookie_value: str) -> str | None:
        """The session id, or ``None`` for a tampered, malformed or foreign value."""
        if not is_cookie_value(cookie_value):
            return None
        session_id, _, signature = cookie_value.partition(".")
        given = signature.encode()
        for key in self._keys:
            if hmac.compare_digest(_signature(key, session_id), given):
                return session_id
        return None


def _checked_keys(secret_keys: object) -> list[str]:
    """The keys as a list, each long enough; errors never show a key."""
    if secret_keys is None:  # os.environ.get("SECRET_KEY") of an unset variable
        raise ConfigurationError(f"a secret key is required (secret_key is None); {_MAKE_KEY}")
    if isinstance(secret_keys, str):
        _check_key(secret_keys, "secret_key")
        return [secret_keys]
    if not isinstance(secret_keys, Sequence) or isinstance(secret_keys, bytes):
        raise ConfigurationError("secret_key must be a string or a list of strings (rotation), "
                                 f"not {type(secret_keys).__name__}")
    if not secret_keys:
        raise ConfigurationError(f"secret_key is an empty list: give at least one key; {_MAKE_KEY}")
    check_secret_keys(secret_keys, [f"secret_key[{i}]" for i in range(len(secret_keys))])
    return list(secret_keys)


def check_secret_keys(keys: Sequence[object], names: Sequence[str]) -> None:
    """Check that each of ``keys`` is a string of enough bytes for HMAC-SHA256,
    naming a key that is not by its name in ``names`` (where the app set it:
    Flask's are ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``). The message never
    shows the key."""
    for key, name in zip(keys, names, strict=True):
        _check_key(key, name)


def _check_key(key: object, label: str) -> None:
    if not isinstance(key, str):
        raise ConfigurationError(f"{label} must be a string, not {type(key).__name__}")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # lone surrogates: itsdangerous could not sign with it
        raise ConfigurationError(f"{label} is not valid Unicode text; {_MAKE_KEY}") from None
    if size < _MIN_KEY_BYTES:
        raise ConfigurationError(
            f"{label} is {size} bytes long (UTF-8); a secret key needs at least "
            f"{_MIN_KEY_BYTES} bytes, random; {_MAKE_KEY}")


def read_cookie(cookie_header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header; the first one wins."""
    for part in cookie_header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


# RFC 6265 path-value: any CHAR but CTLs and ";". Anything else could end the
# attribute, or the header line, and inject attributes or headers.
_PATH_PATTERN = re.compile(r"/[\x20-\x3a\x3c-\x7e]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_PATTERN = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*")


def _check_path(path: object) -> None:
    if not (isinstance(path, str) and _PATH_PATTERN.fullmatch(path)):
        raise ConfigurationError(
            f"cookie path must start with '/' and hold only printable ASCII "
            f"other than ';' (percent-encode the rest), not {path!r}")


def _check_domain(domain: object) -> None:
    if domain is None:
        return
    if not (isinstance(domain, str) and _DOMAIN_PATTERN.fullmatch(domain)):
        raise ConfigurationError(
            "cookie domain must be None or a host name of letters, digits, hyphens and "
            f"dots, optionally with a leading dot (punycode for international names), "
            f"not {domain!r}")


def _check_max_age(max_age: object) -> None:
    # bool is an int: max_age=True would mean one second.
    if max_age is None or (isinstance(max_age, int) and not isinstance(max_age, bool)
                           and max_age >= 0):
        return
    raise ConfigurationError(
        f"cookie max_age must be None or a non-negative int of seconds, not {max_age!r}")


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """How the session cookie is set.

    :param secure: ``None`` (the default) sets ``Secure`` on https requests only;
        ``True`` always, ``False`` never.
    :param host_prefix: name the cookie ``__Host-<name>``: the browser then
        insists on Secure, Path=/ and no Domain, which pins the cookie to one host.
    :param max_age: seconds the browser keeps the cookie; ``None`` keeps it until
        the browser closes (the server-side idle timeout applies either way).
    """

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None
    httponly: bool = True
    samesite: Literal["lax", "strict", "none"] = "lax"
    max_age: int | None = None
    partitioned: bool = False
    host_prefix: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", self.name):
            raise ConfigurationError(f"invalid cookie name {self.name!r}")
        if self.samesite not in ("lax", "strict", "none"):
            raise ConfigurationError("samesite must be 'lax', 'strict' or 'none'")
        _check_path(self.path)
        _check_domain(self.domain)
        _check_max_age(self.max_age)
        if self.host_prefix and (self.domain or self.path != "/" or self.secure is False):
            raise ConfigurationError("a __Host- cookie needs Path=/, no Domain and Secure")
        if (self.samesite == "none" or self.partitioned) and self.secure is False:
            raise ConfigurationError("SameSite=None and Partitioned cookies must be Secure")

    @property
    def full_name(self) -> str:
        return f"__Host-{self.name}" if self.host_prefix else self.name

    def set_cookie(self, value: str, *, https: bool) -> str:
        """A ``Set-Cookie`` header value that stores ``value``."""
        return self._render(value, self.max_age, https)

    def expire_cookie(self, *, https: bool) -> str:
        """A ``Set-Cookie`` header value that makes the browser drop the cookie."""
        return self._render("", 0, https)

    def _render(self, value: str, max_age: int | None, https: bool) -> str:
        parts = [f"{self.full_name}={value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.httponly:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        secure = self.secure if self.secure is not None else (
            https or self.host_prefix or self.samesite == "none" or self.partitioned
        )
        if secure:
            parts.append("Secure")
        if self.partitioned:
            parts.append("Partitioned")
        return "; ".join(parts)
