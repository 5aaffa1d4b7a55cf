from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionware.stores import MemoryStore, Store
from tests.middleware_suite import MiddlewareSuite


class TestMiddlewareOnMemory(MiddlewareSuite):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with MemoryStore() as store:
            yield store
