"""The Redis store and the middleware on uvloop, the event loop that
``uvicorn[standard]`` installs: its transports are not asyncio's classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import uvloop

from sessionware.stores import RedisStore, Store
from tests.contract.store_contract import StoreContract
from tests.middleware_suite import MiddlewareSuite


async def test_the_loop_is_uvloop() -> None:
    import asyncio

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


class TestRedisStoreOnUvloop(StoreContract):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_url) as store:
            yield store


class TestMiddlewareOnRedisOnUvloop(MiddlewareSuite):
    @pytest.fixture
    async def store(self, redis_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_url) as store:
            yield store
