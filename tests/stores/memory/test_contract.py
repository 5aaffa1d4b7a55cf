from __future__ import annotations

import asyncio

import pytest

import sessionware._async.stores.memory as memory_module
import sessionware._sync.stores.memory as sync_memory_module
from sessionware.stores import MemoryStore, Store
from tests.support.faces import on_face
from tests.support.store_contract import (
    LONG,
    MARGIN,
    SHORT,
    ExactPurgeContract,
    ExactScanContract,
    StoreContract,
    new_key,
)


class TestMemoryStore(StoreContract, ExactPurgeContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self) -> Store:
        return MemoryStore()


async def test_expired_records_go_without_any_create(
    monkeypatch: pytest.MonkeyPatch, face: str
) -> None:
    for module in (memory_module, sync_memory_module):
        monkeypatch.setattr(module, "_SWEEP_INTERVAL", 0.0)
    async with on_face(MemoryStore(), face) as store:
        expired, live = [new_key() for _ in range(3)], new_key()
        for key in expired:
            assert await store.create(key, b"v0", ttl=SHORT)
        assert await store.create(live, b"v0", ttl=LONG)
        await asyncio.sleep(SHORT + MARGIN)
        assert await store.acquire(new_key(), lease_ttl=LONG) is None  # traffic elsewhere only
        records = getattr(store, "inner", store)._records
        assert set(records) == {live}
