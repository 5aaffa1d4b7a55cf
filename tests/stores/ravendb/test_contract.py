"""The store contract on a real RavenDB server: 4.1.0 started by the tests, or the
server of RAVENDB_URL (tests/support/servers/ravendb.py). Every test has a
collection of its own, so scans count exactly.

On the swept database the server's expiration sweep (every second here) races
any purge, so purges are counted exactly on the unswept one, where expired
documents stay until purged (tests/stores/ravendb/test_store.py checks there
that every operation finds an expired document absent while it is stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionware.stores import RavenDBStore, Store
from tests.support.faces import on_face
from tests.support.servers.ravendb import RavenTarget
from tests.support.store_contract import ExactPurgeContract, ExactScanContract, StoreContract


class TestRavenDBStore(StoreContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, ravendb: RavenTarget) -> Store:
        return RavenDBStore(ravendb.url, ravendb.swept, collection=ravendb.collection(),
                            sweep_every=1)


class TestRavenDBStoreUnswept(ExactPurgeContract):
    @pytest.fixture
    async def store(self, ravendb: RavenTarget, face: str) -> AsyncIterator[Store]:
        fresh = RavenDBStore(ravendb.url, ravendb.unswept, collection=ravendb.collection(),
                             sweep_every=None)
        async with on_face(fresh, face) as store:
            yield store
