from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import sessionware.stores.memory as memory_module
from sessionware.stores import MemoryStore, Store
from tests.contract.store_contract import (
    LONG,
    MARGIN,
    SHORT,
    ExactPurgeContract,
    StoreContract,
    new_key,
)


class TestMemoryStore(StoreContract, ExactPurgeContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with MemoryStore() as store:
            yield store


async def test_expired_records_go_without_any_create(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "_SWEEP_INTERVAL", 0.0)
    store = MemoryStore()
    expired, live = [new_key() for _ in range(3)], new_key()
    for key in expired:
        assert await store.create(key, b"v0", ttl=SHORT)
    assert await store.create(live, b"v0", ttl=LONG)
    await asyncio.sleep(SHORT + MARGIN)
    assert await store.acquire(new_key(), lease_ttl=LONG) is None  # traffic elsewhere only
    assert set(store._records) == {live}
