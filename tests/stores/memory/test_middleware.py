from __future__ import annotations

import pytest

from sessionware.stores import MemoryStore, Store
from tests.support.middleware_suite import MiddlewareSuite


class TestMiddlewareOnMemory(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self) -> Store:
        return MemoryStore()
