"""The options of every middleware, declared once (:class:`SessionOptions`) and
checked in one place, when the middleware is built: a misspelt option or a
value of the wrong kind is a :class:`~sessionware.ConfigurationError` that
names the option and what it accepts, never a failure at the first request."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from sessionware.cookies import CookieOptions
from sessionware.exceptions import ConfigurationError
from sessionware.modes import LockMode, ModeRule, Scope, mode_selector
from sessionware.responses import ErrorHandler, default_error_response
from sessionware.serializers import Serializer
from sessionware.telemetry import EventHook

__all__ = ["DriverSettings", "SessionConfig", "SessionOptions", "settings_from"]


class SessionOptions(TypedDict, total=False):
    """The keyword options of every middleware, all optional:
    :class:`~sessionware.SessionMiddleware` (also through Starlette's
    ``Middleware(SessionMiddleware, ...)`` and FastAPI's ``add_middleware``),
    :class:`~sessionware.WSGISessionMiddleware` and
    :class:`sessionware.flask.Sessionware`. Each middleware's signature ends
    with ``**options: Unpack[SessionOptions]``, so type checkers check them
    and editors complete them. Durations are in seconds.
    """

    lock_mode: ModeRule
    """How a request's session is loaded: ``"exclusive"`` (default) locks it
    for the whole request; ``"read"`` takes the last committed snapshot, no
    lock, no wait; ``"lazy"`` loads nothing until the route asks
    (``load_session``, ``uses_session``); ``"none"`` gives no session. Or a
    callable over the ASGI scope, or a list of :class:`~sessionware.Rule`
    (the first match wins). Under WSGI, rules and callables see a scope-like
    dict: ``type`` (``"http"``), ``method``, ``path`` (``PATH_INFO``),
    ``root_path`` (``SCRIPT_NAME``), ``scheme``, ``query_string`` (bytes),
    ``headers`` (lower-case byte pairs) and ``environ``."""

    on_error: ErrorHandler
    """Maps a session failure to the response sent instead of the app's
    (default :func:`~sessionware.default_error_response`: 503 with
    Retry-After, 409 for a lost lease, 500 for a session that cannot be
    saved)."""

    serializer: Serializer | None
    """Turns the session into bytes and back (default, or ``None``:
    :class:`~sessionware.JSONSerializer`, orjson when installed)."""

    check_store: bool
    """Set the store up and read from it once before serving (default
    ``True``): ASGI at the lifespan's startup, WSGI when the middleware is
    made, Flask in ``init_app``. A store that cannot serve (a wrong URL or
    path, no server, no permission) fails the startup with its reason instead
    of every request answering 503."""

    on_event: EventHook | None
    """Called with a :class:`~sessionware.telemetry.SessionEvent` when a
    session is created, regenerated or invalidated (once the store confirmed
    it and the lock is released) or expired; an exception in it is logged."""

    meter_provider: Any
    """The OpenTelemetry meter provider for sessionware's metrics
    (:mod:`sessionware.telemetry`); default: the global one. No metrics
    without the ``opentelemetry-api`` package."""

    cookie: CookieOptions
    """How the session cookie is set (default ``CookieOptions()``; in Flask,
    from the ``SESSION_COOKIE_*`` config)."""

    idle_timeout: float
    """A session unused this long expires (sliding). Default 1200 (20 min)."""

    absolute_lifetime: float | None
    """A session expires this long after its creation, however active;
    ``None`` (default) for no limit."""

    lock_timeout: float
    """How long a request waits for its session's lock before
    :class:`~sessionware.LockTimeout` (503). Default 10."""

    lease_ttl: float
    """The lock's lease, renewed while the request runs: it only bounds how
    long a crashed holder blocks its session. Default 5."""

    max_waiting: int
    """Requests of one process that may hold or wait for one session; more
    are refused at once (:class:`~sessionware.QueueFull`). Default 256."""

    max_size: int
    """The largest serialized session, in bytes; more is
    :class:`~sessionware.SessionTooLarge` and nothing is stored. Default
    262144 (256 KiB)."""

    store_timeout: float
    """The longest a single store operation may take, then
    :class:`~sessionware.StoreUnavailable` (503). Default 5."""

    refresh_after: float | None
    """An unchanged session's idle expiry is slid only when that moves it by
    this much; ``None`` (default) for a tenth of ``idle_timeout``."""

    commit_on_5xx: bool
    """Commit the session even when the response status is 5xx. By default
    (``False``) a server error commits nothing: the request failed."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The timing and limit options, as the core reads them: the fields are
    the :class:`SessionOptions` of the same names, documented there, with
    their defaults. The middlewares build it from their keywords; build one
    for :class:`~sessionware.SessionAdmin` (``config=``).
    """

    idle_timeout: float = 20 * 60
    absolute_lifetime: float | None = None
    lock_timeout: float = 10.0
    lease_ttl: float = 5.0
    max_waiting: int = 256
    max_size: int = 256 * 1024
    store_timeout: float = 5.0
    refresh_after: float | None = None
    commit_on_5xx: bool = False
    cookie: CookieOptions = field(default_factory=CookieOptions)

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "lock_timeout", "lease_ttl", "store_timeout"):
            _check_number(name, getattr(self, name), minimum=0.0, exclusive=True)
        for name in ("absolute_lifetime", "refresh_after"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), minimum=0.0,
                              exclusive=name == "absolute_lifetime", none_ok=True)
        _check_number("max_waiting", self.max_waiting, minimum=1, integer=True)
        _check_number("max_size", self.max_size, minimum=2, integer=True)
        if not isinstance(self.commit_on_5xx, bool):
            raise ConfigurationError(
                f"commit_on_5xx must be True or False, not {self.commit_on_5xx!r}")
        if not isinstance(self.cookie, CookieOptions):
            raise ConfigurationError(
                f"cookie must be a sessionware.CookieOptions, not {self.cookie!r}")


def _check_number(name: str, value: object, *, minimum: float, exclusive: bool = False,
                  integer: bool = False, none_ok: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    bound = "greater than" if exclusive else "at least"
    valid = isinstance(value, kinds) and not isinstance(value, bool) and (
        value > minimum if exclusive else value >= minimum)
    if not valid:
        what = "a whole number" if integer else "a number of seconds"
        none = " or None" if none_ok else ""
        raise ConfigurationError(f"{name} must be {what} {bound} {minimum:g}{none}, "
                                 f"not {value!r}")


_CONFIG_OPTIONS = frozenset(f.name for f in fields(SessionConfig))
# The arguments named in the signatures themselves, listed with the options
_ARGUMENTS = ("store", "secret_key")


@dataclass(frozen=True, slots=True)
class DriverSettings:
    """The options, checked and completed with their defaults: what a
    middleware runs on. ``lock_mode`` is compiled to a function from scope
    to mode."""

    config: SessionConfig
    lock_mode: Callable[[Scope], LockMode]
    on_error: ErrorHandler
    serializer: Serializer | None
    check_store: bool
    on_event: EventHook | None
    meter_provider: Any


def settings_from(options: SessionOptions) -> DriverSettings:
    """Check the options a middleware was given and fill in the defaults:
    the one place where options are validated."""
    unknown = sorted(set(options) - SessionOptions.__optional_keys__)
    if unknown:
        known = sorted(SessionOptions.__optional_keys__)
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(f"unknown option {unknown[0]!r}{hint}; the options are: "
                                 + ", ".join([*_ARGUMENTS, *known]))
    given: dict[str, Any] = dict(options)
    config = SessionConfig(**{name: given[name] for name in _CONFIG_OPTIONS if name in given})
    on_error = given.get("on_error", default_error_response)
    _check_callable("on_error", on_error, "a callable(SessionwareError) -> ErrorResponse")
    on_event = given.get("on_event")
    if on_event is not None:
        _check_callable("on_event", on_event, "None or a callable(SessionEvent)")
    serializer = given.get("serializer")
    if serializer is not None and not (callable(getattr(serializer, "dumps", None))
                                       and callable(getattr(serializer, "loads", None))):
        raise ConfigurationError("serializer must be None or an object with dumps(dict) -> "
                                 f"bytes and loads(bytes) -> dict, not {serializer!r}")
    check_store = given.get("check_store", True)
    if not isinstance(check_store, bool):
        raise ConfigurationError(f"check_store must be True or False, not {check_store!r}")
    return DriverSettings(
        config=config, lock_mode=mode_selector(given.get("lock_mode", LockMode.EXCLUSIVE)),
        on_error=on_error, serializer=serializer, check_store=check_store, on_event=on_event,
        meter_provider=given.get("meter_provider"))


def _check_callable(name: str, value: object, what: str) -> None:
    if not callable(value):
        raise ConfigurationError(f"{name} must be {what}, not {value!r}")
