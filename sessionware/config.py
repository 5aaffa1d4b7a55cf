"""The options both middlewares take, checked when the middleware is built:
a misspelt option or a value of the wrong kind is a
:class:`~sessionware.ConfigurationError` that names the option and what it
accepts, never a failure at the first request."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TypedDict

from sessionware.cookies import CookieOptions
from sessionware.exceptions import ConfigurationError

__all__ = ["SessionConfig", "SessionOptions", "config_from_options"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timing and limits. Durations in seconds.

    :param idle_timeout: a session unused this long expires (sliding).
    :param absolute_lifetime: a session expires this long after creation,
        however active; ``None`` for no limit.
    :param lock_timeout: how long a request waits for its session's lock.
    :param lease_ttl: the lock's lease; renewed while the request runs, so it
        only bounds how long a crashed holder blocks its session.
    :param max_waiting: requests of one process that may hold or wait for one
        session; more are refused at once.
    :param max_size: largest serialized session, in bytes.
    :param store_timeout: longest a single store operation may take.
    :param refresh_after: an unchanged session's idle expiry is slid only when
        that moves it by this much (default: a tenth of ``idle_timeout``).
    :param commit_on_5xx: commit the session even when the response status is
        5xx. By default a server error commits nothing: the request failed.
    :param cookie: how the session cookie is set.
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
_DRIVER_OPTIONS = ("store", "secret_key", "lock_mode", "on_error", "serializer")


class SessionOptions(TypedDict, total=False):
    """The keyword options both middlewares accept: :class:`SessionConfig`'s fields."""

    idle_timeout: float
    absolute_lifetime: float | None
    lock_timeout: float
    lease_ttl: float
    max_waiting: int
    max_size: int
    store_timeout: float
    refresh_after: float | None
    commit_on_5xx: bool
    cookie: CookieOptions


def config_from_options(options: SessionOptions) -> SessionConfig:
    """The config the middlewares build from their keyword arguments."""
    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        known = ", ".join([*_DRIVER_OPTIONS, *sorted(_CONFIG_OPTIONS)])
        raise ConfigurationError(f"unknown option {unknown[0]!r}; the options are: {known}")
    return SessionConfig(**options)
