"""Lock modes, and the rules that choose one for each request.

``exclusive`` (the default) locks the session for the whole request: changes
are saved and no concurrent request of the same session interleaves. ``read``
gives the last committed snapshot without lock or wait: for pages that only
look. ``none`` skips the session altogether: static files, health checks.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LockMode", "ModeRule", "Rule", "mode_selector"]

Scope = MutableMapping[str, Any]


class LockMode(enum.StrEnum):
    EXCLUSIVE = "exclusive"
    READ = "read"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Rule:
    """Choose ``mode`` for requests whose path starts with one of ``paths`` (any
    path when empty) and whose method is one of ``methods`` (any when empty)."""

    mode: LockMode | str
    paths: Sequence[str] = ()
    methods: Sequence[str] = ()

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
        fixed = LockMode(rule)
        return lambda scope: LockMode.READ if _is_socket(scope, fixed) else fixed
    if callable(rule):
        chooser = rule
        return lambda scope: LockMode(chooser(scope))
    rules = [Rule(LockMode(r.mode), tuple(r.paths), tuple(m.upper() for m in r.methods))
             for r in rule]

    def select(scope: Scope) -> LockMode:
        mode = next((r.mode for r in rules if r.matches(scope)), LockMode.EXCLUSIVE)
        return LockMode.READ if _is_socket(scope, LockMode(mode)) else LockMode(mode)

    return select


def _is_socket(scope: Scope, mode: LockMode) -> bool:
    return scope.get("type") == "websocket" and mode is LockMode.EXCLUSIVE
