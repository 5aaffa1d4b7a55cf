"""RedisStore's lean command path (sessionware/stores/_resp.py): one shared,
auto-pipelined connection whose replies must never reach the wrong caller."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from sessionware import StoreUnavailable
from sessionware.stores import RedisStore
from tests.contract.store_contract import LONG, new_key
from tests.servers.redis import RedisServer


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url, socket_timeout=0.5) as store:
        assert store._fast is not None, "the lean path is under test"
        yield store


async def test_cancelled_callers_never_shift_replies(store: RedisStore) -> None:
    keys = [new_key() for _ in range(300)]
    await asyncio.gather(*(store.create(k, k.encode(), ttl=LONG) for k in keys))
    rounds = [asyncio.create_task(store.read(k)) for k in keys]
    await asyncio.sleep(0)  # every command is queued in this turn
    cancelled = set(random.Random(7).sample(range(len(keys)), 100))
    for i in cancelled:
        rounds[i].cancel()
    results = await asyncio.gather(*rounds, return_exceptions=True)
    for i, (key, result) in enumerate(zip(keys, results, strict=True)):
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == key.encode()
    assert await asyncio.gather(*(store.read(k) for k in keys)) == [k.encode() for k in keys]


async def test_concurrent_commands_share_one_connection(
    store: RedisStore, redis_server: RedisServer
) -> None:
    name = f"pipe-{new_key()[:8]}"
    keys = [new_key() for _ in range(100)]
    await asyncio.gather(*(store.create(k, b"v", ttl=LONG) for k in keys))
    assert store._fast is not None
    await store._fast.execute(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$%d\r\n%s\r\n"
                              % (len(name), name.encode()))
    await asyncio.gather(*(store.read(k) for k in keys))
    with redis_server.client() as probe:
        named = [c for c in probe.client_list() if c["name"] == name]
    assert len(named) == 1


async def test_a_stalled_server_times_out_then_the_pipe_reconnects(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    async with RedisStore(server.url, socket_timeout=0.3) as store:
        key = new_key()
        assert await store.create(key, b"v", ttl=LONG)
        with redis.Redis(host="127.0.0.1", port=server.port) as admin:
            admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            with pytest.raises(StoreUnavailable):
                await store.read(key)
            admin.execute_command("CLIENT", "UNPAUSE")
        assert await store.read(key) == b"v"
