"""A store from one URL, for configuration that lives outside the code (an
environment variable, Flask config), the way Flask-Session's ``SESSION_TYPE``
picks a backend.

===================================  =============================================
URL                                  store
===================================  =============================================
``memory://``                        ``MemoryStore()``
``sqlite:///sessions.db``            ``SQLiteStore("sessions.db")`` (relative path)
``sqlite:////var/lib/app/s.db``      ``SQLiteStore("/var/lib/app/s.db")``
``redis://``, ``rediss://``          ``RedisStore(url)``
``redis+cluster://``                 ``RedisStore("redis://...", cluster=True)``
``postgresql://``, ``postgres://``   ``PostgresStore(dsn)``
``dynamodb://TABLE``                 ``DynamoDBStore(TABLE, region_name=, endpoint_url=)``
``azure://CONNECTION-STRING``        ``AzureTableStore(connection_string, ...)``
``mongodb://``, ``mongodb+srv://``   ``MongoDBStore(url, database=, collection=)``
===================================  =============================================

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
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from sessionware._async.stores.base import Store
from sessionware.exceptions import ConfigurationError

__all__ = ["ENV_VAR", "store_from_env", "store_from_url"]

ENV_VAR = "SESSIONWARE_STORE_URL"
"""The environment variable :func:`store_from_env` reads."""

_SCHEMES = ("memory://, sqlite:///PATH, redis://, rediss://, redis+cluster://, "
            "postgresql://, postgres://, dynamodb://TABLE, azure://CONNECTION-STRING, "
            "mongodb://, mongodb+srv://")


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
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    builder = _BUILDERS.get(scheme) if sep else None
    if builder is None:
        raise ConfigurationError(
            f"store URL {_redacted(url)!r}: unknown scheme; use one of {_SCHEMES}")
    return builder(scheme, url)


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


def _memory(scheme: str, url: str) -> Store:
    parts = urlsplit(url)
    if parts.netloc or parts.path.strip("/"):
        raise ConfigurationError(
            f"store URL {url!r}: memory:// takes no host or path (it is one process's memory)")
    cls = _store_class("MemoryStore")
    return cls(**_options(cls, scheme, _query(parts.query, scheme)))


def _sqlite(scheme: str, url: str) -> Store:
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"store URL {url!r}: a SQLite URL has no host; write sqlite:///relative.db "
            "or sqlite:////absolute/path.db (three slashes, then the path)")
    # As SQLAlchemy: the path follows the third slash, so an absolute one has four.
    path = unquote(parts.path[1:])
    if not path:
        raise ConfigurationError(
            f"store URL {url!r}: name the database file, e.g. sqlite:///sessions.db")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"store URL {url!r}: SQLiteStore needs a file that every thread and process "
            "opens; for sessions in this process's memory use memory://")
    cls = _store_class("SQLiteStore")
    return cls(path, **_options(cls, scheme, _query(parts.query, scheme)))


def _redis(scheme: str, url: str) -> Store:
    cls = _store_class("RedisStore")
    cluster = scheme.endswith("+cluster")
    if cluster:
        url = scheme.removesuffix("+cluster") + url[len(scheme):]
    parts = urlsplit(url)
    ours, driver = _split(cls, scheme, _query(parts.query, scheme), _redis_driver_options())
    if cluster:
        ours.setdefault("cluster", True)
    return cls(urlunsplit(parts._replace(query=urlencode(driver))), **ours)


def _postgres(scheme: str, url: str) -> Store:
    cls = _store_class("PostgresStore")
    parts = urlsplit(url)
    ours, driver = _split(cls, scheme, _query(parts.query, scheme), None)
    dsn = urlunsplit(parts._replace(query=urlencode(driver)))
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:  # libpq's own parser: what it refuses here, it would refuse at connect
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ConfigurationError(f"store URL {_redacted(url)!r}: {exc}".strip()) from None
    return cls(dsn, **ours)


def _dynamodb(scheme: str, url: str) -> Store:
    cls = _store_class("DynamoDBStore")
    parts = urlsplit(url)
    table = unquote(parts.netloc)
    if not table or parts.path.strip("/"):
        raise ConfigurationError(
            f"store URL {url!r}: write dynamodb://TABLE?region=...&endpoint_url=...")
    query = _query(parts.query, scheme)
    if "region" in query:  # the short name, as in the URLs people write
        if "region_name" in query:
            raise ConfigurationError(f"{scheme}:// store URL: give region or region_name, "
                                     "not both")
        query["region_name"] = query.pop("region")
    return cls(table, **_options(cls, scheme, query))


def _azure(scheme: str, url: str) -> Store:
    cls = _store_class("AzureTableStore")
    # A connection string holds '=', ';', '/' and '+' (the account key is
    # base64), so it is taken verbatim up to the first '?', not parsed as a URL.
    connection_string, _, query = url[len(scheme) + 3:].partition("?")
    connection_string = unquote(connection_string)
    if "=" not in connection_string:
        raise ConfigurationError(
            "azure:// store URL: put the storage account's connection string after "
            "azure:// (e.g. azure://UseDevelopmentStorage=true?table=sessions)")
    return cls(connection_string, **_options(cls, scheme, _query(query, scheme)))


def _mongodb(scheme: str, url: str) -> Store:
    cls = _store_class("MongoDBStore")
    parts = urlsplit(url)
    # The driver validates its own URI options; ours are taken out first.
    ours, driver = _split(cls, scheme, _query(parts.query, scheme), None)
    return cls(urlunsplit(parts._replace(query=urlencode(driver))), **ours)


_BUILDERS: dict[str, Callable[[str, str], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
    "dynamodb": _dynamodb,
    "azure": _azure,
    "mongodb": _mongodb,
    "mongodb+srv": _mongodb,
}


def _store_class(name: str) -> Callable[..., Store]:
    """The store class, from the registry in :mod:`sessionware.stores`, imported
    on first use: a missing driver raises the store's own ImportError, which
    names the extra to install."""
    from sessionware import stores

    cls: Callable[..., Store] = getattr(stores, name)
    return cls


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


def _redis_driver_options() -> frozenset[str]:
    """What redis-py reads from a URL's query besides the store's options:
    its parsed URL arguments and its connections' keyword arguments."""
    from redis import connection

    names = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    for cls in (connection.AbstractConnection, connection.Connection,
                connection.SSLConnection):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names - {"self", "args", "kwargs", "host", "port", "username",
                              "password", "path"})


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
