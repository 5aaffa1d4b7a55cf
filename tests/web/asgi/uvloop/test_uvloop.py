"""The Redis store and the middleware on uvloop, the event loop that
``uvicorn[standard]`` installs: its transports are not asyncio's classes. The
async face only: the sync face runs no event loop of its own."""

from __future__ import annotations

import pytest
import uvloop

from sessionware.stores import RedisStore, Store
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.store_contract import StoreContract

pytestmark = pytest.mark.faces("async")


async def test_the_loop_is_uvloop() -> None:
    import asyncio

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


class TestRedisStoreOnUvloop(StoreContract):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url)


class TestMiddlewareOnRedisOnUvloop(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url)
