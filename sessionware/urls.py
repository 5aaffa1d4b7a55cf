"""A store from one URL, for configuration that lives outside the code (an
environment variable, Flask config), the way Flask-Session's ``SESSION_TYPE``
picks a backend.

Each store takes the URL schemes its line in the registry
(:data:`sessionware.stores.STORES`) names, and reads the rest of the URL in
its own ``from_url``; docs/stores/index.md lists every form.

Query parameters set the store's keyword options by name
(``sqlite:///s.db?table=web_sessions``, ``redis://host/0?prefix=app:&lean=false``);
the ones a store does not take are left in the URL for its driver where the
driver reads options from it (redis-py, libpq, the MongoDB driver), and
refused otherwise. A misspelt option, a bad value or an unknown scheme raises
:class:`~sessionware.ConfigurationError` naming it; errors never show a
password or an account key.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from sessionware.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sessionware._async.stores.base import Store

__all__ = ["ENV_VAR", "StoreURL", "store_from_env", "store_from_url"]

ENV_VAR = "SESSIONWARE_STORE_URL"
"""The environment variable :func:`store_from_env` reads."""

def store_from_url(url: str) -> Store:
    """The store that ``url`` names, built but not yet connected (stores
    connect at their first operation).

    :raises ConfigurationError: an unknown scheme, an option the store does
        not take, or a value of the wrong kind, each named in the message.
    :raises ImportError: the store's driver is not installed; the message names
        the extra to install (``pip install sessionware[redis]``).
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a store URL must be a string, not {type(url).__name__}")
    from sessionware import stores  # the registry, which imports a store at first use

    scheme, sep, _ = url.partition("://")
    name = stores.SCHEMES.get(scheme.lower()) if sep else None
    if name is None:
        forms = ", ".join(form for entry in stores.STORES.values() for form in entry.urls)
        raise ConfigurationError(
            f"store URL {_redacted(url)!r}: unknown scheme; use one of {forms}")
    cls: type[Store] = getattr(stores, name)
    return cls.from_url(StoreURL(url, scheme.lower()))


def store_from_env(environ: Mapping[str, str] = os.environ) -> Store:
    """The store named by the ``SESSIONWARE_STORE_URL`` variable of ``environ``.

    :raises ConfigurationError: the variable is unset or empty, or names no store.
    """
    url = environ.get(ENV_VAR, "").strip()
    if not url:
        raise ConfigurationError(
            f"no session store: set {ENV_VAR} (e.g. {ENV_VAR}=sqlite:///sessions.db) "
            "or pass store=")
    return store_from_url(url)


class StoreURL:
    """A store URL as a store's ``from_url`` reads it: what the store needs
    of the URL is its own; the query's options, checked against the store's
    constructor, and the error messages are the same for every store."""

    def __init__(self, text: str, scheme: str) -> None:
        self.text = text
        self.scheme = scheme  # lower case, as looked up

    @property
    def parts(self) -> SplitResult:
        return urlsplit(self.text)

    @property
    def query(self) -> dict[str, str]:
        """The query's options, each given once."""
        return _query(self.text.partition("?")[2].partition("#")[0], self.scheme)

    def options(self, cls: type, query: dict[str, str] | None = None) -> dict[str, Any]:
        """The store's keyword options, parsed by its constructor's annotations;
        any other name in the query is refused."""
        return _options(cls, self.scheme, self.query if query is None else query)

    def split(self, cls: type, driver: Collection[str] | None = None,
              ) -> tuple[dict[str, Any], str]:
        """The store's keyword options, and the URL with the rest of its query
        left for the driver: all of it when ``driver`` is ``None`` (the driver
        checks its own), else the names in ``driver`` (any other is refused)."""
        ours, rest = _split(cls, self.scheme, self.query, driver)
        return ours, urlunsplit(self.parts._replace(query=urlencode(rest)))

    def error(self, message: str) -> ConfigurationError:
        """The error for a URL this store cannot take, which never shows a password."""
        return ConfigurationError(f"store URL {_redacted(self.text)!r}: {message}")


def _query(query: str, scheme: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise ConfigurationError(f"{scheme}:// store URL: option {name!r} given twice")
        options[name] = value
    return options


def _split(cls: Any, scheme: str, query: dict[str, str],
           driver: Collection[str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The store's options, and the rest for the driver: all of them when
    ``driver`` is ``None`` (the driver checks its own), else those it names."""
    known = _settable(cls)
    ours = {name: value for name, value in query.items() if name in known}
    rest = {name: value for name, value in query.items() if name not in known}
    if driver is not None:
        unknown = sorted(set(rest) - set(driver))
        if unknown:
            _unknown(cls, scheme, unknown[0], known, also="or an option of the driver's URL")
    return _options(cls, scheme, ours), rest


def _options(cls: Any, scheme: str, query: dict[str, str]) -> dict[str, Any]:
    known = _settable(cls)
    options: dict[str, Any] = {}
    for name, value in query.items():
        parse = known.get(name)
        if parse is None:
            _unknown(cls, scheme, name, known)
        try:
            options[name] = parse(value)
        except ValueError as exc:
            raise ConfigurationError(
                f"{scheme}:// store URL: option {name}={value!r}: {exc}") from None
    return options


def _unknown(cls: Any, scheme: str, name: str, known: Mapping[str, object],
             also: str = "") -> NoReturn:
    names = ", ".join(sorted(known)) or "none"
    extra = f" ({also})" if also else ""
    raise ConfigurationError(
        f"{scheme}:// store URL: unknown option {name!r}; {cls.__name__} takes: "
        f"{names}{extra}")


def _settable(cls: Any) -> dict[str, Callable[[str], Any]]:
    """The store's keyword options that a URL can spell (numbers, flags and
    strings), each with its parser; chosen by the constructor's annotations,
    so a store's new option is settable from a URL with no change here."""
    found: dict[str, Callable[[str], Any]] = {}
    parameters = list(inspect.signature(cls).parameters.values())
    if parameters and parameters[0].kind is not inspect.Parameter.KEYWORD_ONLY:
        parameters = parameters[1:]  # what the URL itself names: path, URL, table
    for parameter in parameters:
        if parameter.kind not in (inspect.Parameter.KEYWORD_ONLY,
                                  inspect.Parameter.POSITIONAL_OR_KEYWORD):
            continue
        name = parameter.name
        parse = _parser(parameter.annotation)
        if parse is not None:
            found[name] = parse
    return found


def _parser(annotation: object) -> Callable[[str], Any] | None:
    if isinstance(annotation, type):  # most stores postpone annotations: strings
        annotation = annotation.__name__
    kinds = {part.strip() for part in str(annotation).split("|")}
    optional = "None" in kinds
    kinds.discard("None")
    if len(kinds) != 1:
        return None
    parse = _SCALARS.get(kinds.pop())
    if parse is None:
        return None
    if not optional:
        return parse
    return lambda value: None if value.lower() in ("none", "null") else parse(value)


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError("use a whole number") from None


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("use a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("use a finite number")
    return number


_SCALARS: dict[str, Callable[[str], Any]] = {
    "bool": _boolean, "int": _integer, "float": _number, "str": str,
}


def _redacted(url: str) -> str:
    """``url`` without its password (or, for azure://, anything after the scheme)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return url[:40]
    if scheme.lower() == "azure":
        return "azure://..."
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return f"{scheme}://..."
