"""Session stores, each with two faces: ``RedisStore`` (async, for ASGI) and
its generated twin ``SyncRedisStore`` (blocking, for WSGI), and so on. Name the
async class everywhere: the WSGI middleware takes its sync face itself
(:meth:`Store.sync`).

``MemoryStore`` and ``SQLiteStore`` need nothing beyond the standard library;
stores with a driver are imported on first use, so a missing extra fails only
where it is used, with the name of the extra to install."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionware.stores.answers import Lease, Locked, Record

if TYPE_CHECKING:
    from sessionware._async.stores.azure import AzureTableStore
    from sessionware._async.stores.base import Store
    from sessionware._async.stores.dynamodb import DynamoDBStore
    from sessionware._async.stores.memory import MemoryStore
    from sessionware._async.stores.mongodb import MongoDBStore
    from sessionware._async.stores.postgres import PostgresStore
    from sessionware._async.stores.ravendb import RavenDBStore
    from sessionware._async.stores.redis import RedisStore
    from sessionware._async.stores.sqlite import SQLiteStore
    from sessionware._sync.stores.azure import SyncAzureTableStore
    from sessionware._sync.stores.base import SyncStore
    from sessionware._sync.stores.dynamodb import SyncDynamoDBStore
    from sessionware._sync.stores.memory import SyncMemoryStore
    from sessionware._sync.stores.mongodb import SyncMongoDBStore
    from sessionware._sync.stores.postgres import SyncPostgresStore
    from sessionware._sync.stores.ravendb import SyncRavenDBStore
    from sessionware._sync.stores.redis import SyncRedisStore
    from sessionware._sync.stores.sqlite import SyncSQLiteStore
    from sessionware.urls import store_from_url

__all__ = ["AzureTableStore", "DynamoDBStore", "Lease", "Locked", "MemoryStore", "MongoDBStore",
           "PostgresStore", "RavenDBStore", "Record", "RedisStore", "SQLiteStore", "Store",
           "SyncAzureTableStore", "SyncDynamoDBStore", "SyncMemoryStore", "SyncMongoDBStore",
           "SyncPostgresStore", "SyncRavenDBStore", "SyncRedisStore", "SyncSQLiteStore",
           "SyncStore", "store_from_url"]

class Entry(NamedTuple):
    """A store in the registry: its module's name (the same in
    sessionware/_async/stores/ and sessionware/_sync/stores/) and the forms
    of the URLs it takes (:func:`store_from_url` reads the scheme of each)."""

    module: str
    urls: tuple[str, ...] = ()


# The registry, a line a store. Its classes are imported at first use, so
# that a store whose extra is missing fails only where it is used, with the
# name of the extra to install, and so that the stores' modules may import
# this package's face-independent parts.
STORES = {
    "Store": Entry("base"),
    "MemoryStore": Entry("memory", ("memory://",)),
    "SQLiteStore": Entry("sqlite", ("sqlite:///PATH",)),
    "RedisStore": Entry("redis", ("redis://", "rediss://", "redis+cluster://",
                                  "rediss+cluster://")),
    "PostgresStore": Entry("postgres", ("postgresql://", "postgres://")),
    "DynamoDBStore": Entry("dynamodb", ("dynamodb://TABLE",)),
    "AzureTableStore": Entry("azure", ("azure://CONNECTION-STRING",)),
    "MongoDBStore": Entry("mongodb", ("mongodb://", "mongodb+srv://")),
    "RavenDBStore": Entry("ravendb", ("ravendb://HOST:PORT/DATABASE",
                                      "ravendb+https://HOST:PORT/DATABASE")),
}

SCHEMES = {url.partition("://")[0]: name for name, entry in STORES.items() for url in entry.urls}
"""Each URL scheme and the store class that takes it."""


def twin_of(cls: type) -> type[SyncStore] | None:
    """The generated blocking twin of a registered store class (``SyncRedisStore``
    for ``RedisStore``), or ``None`` for a class the registry does not hold."""
    entry = STORES.get(cls.__name__)
    if entry is None or cls.__module__ != f"sessionware._async.stores.{entry.module}":
        return None
    twin: type[SyncStore] = __getattr__("Sync" + cls.__name__)
    return twin


def __getattr__(name: str) -> Any:
    if name == "store_from_url":
        from sessionware.urls import store_from_url

        return store_from_url
    sync = name.startswith("Sync") and name.removeprefix("Sync") in STORES
    entry = STORES.get(name.removeprefix("Sync") if sync else name)
    if entry is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    face = "_sync" if sync else "_async"
    value = getattr(importlib.import_module(f"sessionware.{face}.stores.{entry.module}"), name)
    globals()[name] = value  # once: later lookups find it here
    return value
