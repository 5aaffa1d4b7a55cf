"""Session stores, each with two faces: ``RedisStore`` (async, for ASGI) and
its generated twin ``SyncRedisStore`` (blocking, for WSGI), and so on. Name the
async class everywhere: the WSGI middleware takes its sync face itself
(:meth:`Store.sync`).

``MemoryStore`` and ``SQLiteStore`` need nothing beyond the standard library;
stores with a driver are imported on first use, so a missing extra fails only
where it is used, with the name of the extra to install."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sessionware._sync.stores.base import SyncStore
from sessionware._sync.stores.memory import SyncMemoryStore
from sessionware.stores.base import Lease, Locked, Record, Store
from sessionware.stores.memory import MemoryStore

if TYPE_CHECKING:
    from sessionware._sync.stores.azure import SyncAzureTableStore
    from sessionware._sync.stores.dynamodb import SyncDynamoDBStore
    from sessionware._sync.stores.mongodb import SyncMongoDBStore
    from sessionware._sync.stores.postgres import SyncPostgresStore
    from sessionware._sync.stores.redis import SyncRedisStore
    from sessionware._sync.stores.sqlite import SyncSQLiteStore
    from sessionware.stores.azure import AzureTableStore
    from sessionware.stores.dynamodb import DynamoDBStore
    from sessionware.stores.mongodb import MongoDBStore
    from sessionware.stores.postgres import PostgresStore
    from sessionware.stores.redis import RedisStore
    from sessionware.stores.sqlite import SQLiteStore
    from sessionware.urls import store_from_url

__all__ = ["AzureTableStore", "DynamoDBStore", "Lease", "Locked", "MemoryStore", "MongoDBStore",
           "PostgresStore", "Record", "RedisStore", "SQLiteStore", "Store", "SyncAzureTableStore",
           "SyncDynamoDBStore", "SyncMemoryStore", "SyncMongoDBStore", "SyncPostgresStore",
           "SyncRedisStore", "SyncSQLiteStore", "SyncStore", "store_from_url"]

_LAZY = {
    "AzureTableStore": "sessionware.stores.azure",
    "SyncAzureTableStore": "sessionware._sync.stores.azure",
    "DynamoDBStore": "sessionware.stores.dynamodb",
    "SyncDynamoDBStore": "sessionware._sync.stores.dynamodb",
    "MongoDBStore": "sessionware.stores.mongodb",
    "SyncMongoDBStore": "sessionware._sync.stores.mongodb",
    "PostgresStore": "sessionware.stores.postgres",
    "SyncPostgresStore": "sessionware._sync.stores.postgres",
    "RedisStore": "sessionware.stores.redis",
    "SQLiteStore": "sessionware.stores.sqlite",
    "SyncRedisStore": "sessionware._sync.stores.redis",
    "SyncSQLiteStore": "sessionware._sync.stores.sqlite",
    "store_from_url": "sessionware.urls",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
