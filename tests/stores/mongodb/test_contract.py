"""The store contract on MongoDB: the mongoeco emulator over the wire, and a
real server when MONGODB_URL names one (tests/support/servers/mongodb.py).

Exact purge counts are not part of it here: MongoDB's TTL monitor (the
emulator at once) deletes expired documents by itself, racing any count; see
tests/stores/mongodb/test_store.py for purges counted on a collection without the
TTL index. Exact scans are: every test has a database of its own."""

from __future__ import annotations

import pytest

from sessionware.stores import MongoDBStore, Store
from tests.support.servers.mongodb import MongoTarget
from tests.support.store_contract import ExactScanContract, StoreContract


class TestMongoDBStore(StoreContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, mongodb: MongoTarget) -> Store:
        return MongoDBStore(mongodb.url, database=mongodb.database())
