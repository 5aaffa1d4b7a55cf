"""MongoDBStore and the middleware on uvloop, the event loop that
``uvicorn[standard]`` installs: pymongo's asyncio client drives its sockets
through the loop (``sock_connect``, ``create_connection``), and uvloop's are
not asyncio's. The async face only; on the mongoeco emulator."""

from __future__ import annotations

import pytest

from sessionware.stores import MongoDBStore, Store
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.servers.mongodb import MongoTarget
from tests.support.store_contract import StoreContract

pytestmark = pytest.mark.faces("async")


class TestMongoDBStoreOnUvloop(StoreContract):
    @pytest.fixture
    def fresh_store(self, mongodb: MongoTarget) -> Store:
        return MongoDBStore(mongodb.url, database=mongodb.database())


class TestMiddlewareOnMongoDBOnUvloop(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, mongodb: MongoTarget) -> Store:
        return MongoDBStore(mongodb.url, database=mongodb.database())
