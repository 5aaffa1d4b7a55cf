"""The store contract on a real single server and on a real 3-node Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionware.stores import RedisStore, Store
from tests.contract.store_contract import StoreContract


class TestRedisStore(StoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_url) as store:
            yield store


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    async def store(self, redis_cluster_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_cluster_url, cluster=True) as store:
            yield store
