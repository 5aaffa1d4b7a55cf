from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionware.stores import MemoryStore, Store
from tests.contract.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with MemoryStore() as store:
            yield store
