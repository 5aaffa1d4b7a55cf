"""Session stores. ``MemoryStore`` and ``SQLiteStore`` need nothing beyond the
standard library; stores with a driver are imported on first use, so a missing
extra fails only where it is used, with the name of the extra to install."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sessionware.stores.base import Lease, Locked, Store
from sessionware.stores.memory import MemoryStore

if TYPE_CHECKING:
    from sessionware.stores.redis import RedisStore
    from sessionware.stores.sqlite import SQLiteStore

__all__ = ["Lease", "Locked", "MemoryStore", "RedisStore", "SQLiteStore", "Store"]

_LAZY = {"RedisStore": "sessionware.stores.redis", "SQLiteStore": "sessionware.stores.sqlite"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
