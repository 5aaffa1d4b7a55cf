"""Lock modes, and the rules that choose one for each request.

``exclusive`` (the default) locks the session for the whole request: changes
are saved and no concurrent request of the same session interleaves. ``read``
gives the last committed snapshot without lock or wait: for pages that only
look. ``none`` skips the session altogether: static files, health checks.
``lazy`` loads nothing until the app asks: a route that declares the session
(:func:`~sessionware.load_session`, :func:`~sessionware.uses_session`, the
FastAPI dependencies of :mod:`sessionware.fastapi`) locks or reads it; every
other request costs no store trip and waits for no lock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from sessionware.exceptions import ConfigurationError

__all__ = ["LockMode", "ModeRule", "Rule", "mode_selector"]

Scope = MutableMapping[str, Any]


class LockMode(enum.StrEnum):
    EXCLUSIVE = "exclusive"
    READ = "read"
    NONE = "none"
    LAZY = "lazy"


@dataclass(frozen=True, slots=True)
class Rule:
    """Choose ``mode`` for requests whose path starts with one of ``paths`` (any
    path when empty) and whose method is one of ``methods`` (any when empty)."""

    mode: LockMode | str
    paths: Sequence[str] = ()
    methods: Sequence[str] = ()

    def __post_init__(self) -> None:
        # Frozen: normalize through object.__setattr__, once, so matching is cheap
        # and a generator given as paths is not consumed by the check.
        object.__setattr__(self, "mode", _as_mode(self.mode, "Rule mode"))
        object.__setattr__(self, "paths", _strings(self.paths, "paths"))
        object.__setattr__(self, "methods",
                           tuple(m.upper() for m in _strings(self.methods, "methods")))

    def matches(self, scope: Scope) -> bool:
        if self.paths and not str(scope.get("path", "")).startswith(tuple(self.paths)):
            return False
        return not self.methods or scope.get("method", "GET") in self.methods


ModeRule = LockMode | str | Callable[[Scope], LockMode | str] | Iterable[Rule]
"""What ``lock_mode`` accepts: one mode for all, a callable over the ASGI scope
(WSGI: over a scope-like dict with ``type``, ``path`` and ``method``), or rules
tried in order, the first match winning, :attr:`LockMode.EXCLUSIVE` if none does."""


def mode_selector(rule: ModeRule) -> Callable[[Scope], LockMode]:
    """Compile ``rule`` into a function from scope to mode.

    WebSocket scopes get ``read`` unless a rule names them explicitly by
    callable: a connection must not hold the lock for its whole life.
    """
    if isinstance(rule, str):
        fixed = _as_mode(rule, "lock_mode")
        return lambda scope: LockMode.READ if _is_socket(scope, fixed) else fixed
    if callable(rule):
        chooser = rule
        # A bad result is the app's configuration bug, found at its first request.
        return lambda scope: _as_mode(chooser(scope), "the lock_mode callable's result")
    rules = _rules(rule)

    def select(scope: Scope) -> LockMode:
        mode = next((LockMode(r.mode) for r in rules if r.matches(scope)), LockMode.EXCLUSIVE)
        return LockMode.READ if _is_socket(scope, mode) else mode

    return select


_MODES = "'exclusive', 'read', 'lazy' or 'none'"
_KINDS = f"{_MODES}, a callable over the scope, or a list of Rule"


def _as_mode(value: object, source: str) -> LockMode:
    if isinstance(value, str):
        try:
            return LockMode(value)
        except ValueError:
            pass
    raise ConfigurationError(f"{source} is {value!r}, not a lock mode: use {_MODES}")


def _strings(value: object, name: str) -> tuple[str, ...]:
    # A lone string is iterable too: paths="/static" would be "/", "s", ...
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"Rule {name} must be a list of strings, not {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(f"Rule {name} must be a list of strings, not {items!r}")
    return items


def _rules(rule: object) -> list[Rule]:
    if isinstance(rule, bytes) or not isinstance(rule, Iterable):
        raise ConfigurationError(f"lock_mode must be {_KINDS}, not {rule!r}")
    rules = list(rule)
    for position, item in enumerate(rules):
        if not isinstance(item, Rule):
            raise ConfigurationError(
                f"lock_mode[{position}] is {item!r}, not a Rule: lock_mode must be {_KINDS}")
    return rules


def _is_socket(scope: Scope, mode: LockMode) -> bool:
    return scope.get("type") == "websocket" and mode is LockMode.EXCLUSIVE
