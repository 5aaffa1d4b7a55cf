"""The store contract on a real single server, on its lean path and on
redis-py's own (``lean=False``), and on a real 3-node Redis Cluster."""

from __future__ import annotations

import pytest

from sessionware.stores import RedisStore, Store
from tests.support.store_contract import StoreContract


class TestRedisStore(StoreContract):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url)


class TestRedisStoreOnRedisPy(StoreContract):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url, lean=False)


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def fresh_store(self, redis_cluster_url: str) -> Store:
        return RedisStore(redis_cluster_url, cluster=True)
