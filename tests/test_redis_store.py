"""RedisStore beyond the contract: round trips, notification wake-ups, one subscriber,
faults and recovery. Every test runs against a real valkey-server."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis
import redis.asyncio as aioredis

from sessionware import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores import Lease, Locked, RedisStore
from tests.contract.store_contract import LONG, acquire_lease, new_key
from tests.servers.redis import HOST, CountingProxy, RedisServer


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[CountingProxy]:
    proxy = CountingProxy(redis_server.port)
    await proxy.start()
    yield proxy
    await proxy.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url) as store:
        yield store


def _raw(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port)


# -- round trips -------------------------------------------------------------------


async def test_every_operation_is_one_evalsha(proxy: CountingProxy) -> None:
    async with RedisStore(proxy.url) as store:
        key = new_key()
        proxy.take()  # setup: connection handshake and SCRIPT LOAD
        assert await store.create(key, b"v0", ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        lease = await acquire_lease(store, key)
        assert proxy.take() == ["EVALSHA"]
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        assert proxy.take() == ["EVALSHA"]
        await store.renew(lease, lease_ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        assert await store.read(key, ttl=LONG) == b"v0"
        assert proxy.take() == ["EVALSHA"]
        await store.commit(lease, b"v1", ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        lease = await acquire_lease(store, key)
        proxy.take()
        await store.release(lease, ttl=LONG, refresh_after=1.0)
        assert proxy.take() == ["EVALSHA"]
        lease = await acquire_lease(store, key)
        proxy.take()
        await store.delete(lease)
        assert proxy.take() == ["EVALSHA"]


async def test_scripts_missing_after_script_flush_are_reloaded(
    proxy: CountingProxy, redis_server: RedisServer
) -> None:
    async with RedisStore(proxy.url) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        with _raw(redis_server.port) as raw:
            raw.script_flush()
        proxy.take()
        lease = await acquire_lease(store, key)
        assert proxy.take() == ["EVALSHA", "SCRIPT", "EVALSHA"]  # NOSCRIPT, load, rerun
        await store.commit(lease, b"v1", ttl=LONG)
        assert await store.read(key) == b"v1"


# -- wake-ups by notification --------------------------------------------------------


async def _subscribed(store: RedisStore, key: str, port: int, channel: str) -> None:
    """Start the store's subscriber and wait until the server lists it."""
    await store.wait(key, 0.01, 0)
    with _raw(port) as raw:
        for _ in range(200):
            if raw.pubsub_numsub(channel)[0][1] == 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the subscriber never subscribed")
    await asyncio.sleep(0.05)  # let the store read the confirmation


@pytest.mark.parametrize("topology", ["single", "cluster"])
async def test_a_release_wakes_a_waiter_by_notification(
    topology: str, request: pytest.FixtureRequest
) -> None:
    cluster = topology == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    prefix = f"t{secrets.token_hex(4)}:"
    async with RedisStore(url, cluster=cluster, prefix=prefix) as waiter_store, \
            RedisStore(url, cluster=cluster, prefix=prefix) as holder_store:
        key = new_key()
        assert await holder_store.create(key, b"v0", ttl=LONG)
        holder = await acquire_lease(holder_store, key)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        if not cluster:
            await _subscribed(waiter_store, key, port, f"{prefix}wake")
        else:
            await waiter_store.wait(key, 0.01, 0)
            await asyncio.sleep(0.3)
        assert isinstance(await waiter_store.acquire(key, lease_ttl=LONG), Locked)
        # attempt 60: the fallback re-check sleeps 0.5 s or more; only a message is prompt
        waiting = asyncio.create_task(waiter_store.wait(key, LONG, 60))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the waiter polled instead of waiting for a message"
        released = time.monotonic()
        await holder_store.commit(holder, b"v1", ttl=LONG)
        await asyncio.wait_for(waiting, 5.0)
        assert time.monotonic() - released < 0.15
        assert isinstance(await waiter_store.acquire(key, lease_ttl=LONG), Lease)


async def test_one_subscriber_connection_for_many_waiters(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    async with RedisStore(server.url, prefix="one:") as store, \
            RedisStore(server.url, prefix="one:") as holder_store:
        keys = [new_key() for _ in range(5)]
        for key in keys:
            assert await holder_store.create(key, b"v0", ttl=LONG)
            await acquire_lease(holder_store, key)
        waiters = [asyncio.create_task(store.wait(key, 2.0, 60))
                   for key in keys for _ in range(10)]
        await asyncio.sleep(0.3)
        with _raw(server.port) as raw:
            assert raw.pubsub_numsub("one:wake")[0][1] == 1
            subscribers = [c for c in raw.client_list() if int(c["sub"]) > 0]
        assert len(subscribers) == 1
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def test_uncontended_release_publishes_nothing(store: RedisStore, redis_url: str) -> None:
    listener = aioredis.Redis.from_url(redis_url).pubsub()
    try:
        await listener.subscribe("sessionware:wake")
        await listener.get_message(timeout=1.0)  # the subscribe confirmation
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        await store.commit(await acquire_lease(store, key), b"v1", ttl=LONG)
        assert await listener.get_message(timeout=0.2) is None
        holder = await acquire_lease(store, key)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)  # flags a waiter
        await store.release(holder)
        message = await listener.get_message(timeout=2.0)
        assert message is not None
        assert message["data"] == f"sessionware:{{{key}}}".encode()
    finally:
        await listener.aclose()


# -- tokens -------------------------------------------------------------------------------


async def test_tokens_are_not_reused_by_a_recreated_session(store: RedisStore) -> None:
    key = new_key()
    assert await store.create(key, b"v0", ttl=LONG)
    old = await acquire_lease(store, key)
    await store.delete(old)
    assert await store.create(key, b"v0", ttl=LONG)
    assert (await acquire_lease(store, key)).token > old.token


# -- faults ----------------------------------------------------------------------------------


async def test_stopped_server_is_unavailable_then_recovers(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    async with RedisStore(server.url, socket_timeout=1.0) as store, \
            RedisStore(server.url) as holder_store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(store, key)
        await store.wait(key, 0.05, 0)  # start the subscriber before the outage
        server.stop()
        for operation in (
            store.acquire(key, lease_ttl=LONG),
            store.read(key),
            store.create(new_key(), b"x", ttl=LONG),
            store.commit(lease, b"v1", ttl=LONG),
            store.release(lease),
            store.renew(lease, lease_ttl=LONG),
            store.delete(lease),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                await operation
            assert isinstance(caught.value.__cause__, redis.exceptions.RedisError)
        await store.wait(key, 0.05, 3)  # waiting during an outage returns, never raises

        server.start()  # same port, empty data set
        assert await store.create(key, b"v0", ttl=LONG)
        holder = await acquire_lease(holder_store, key)
        await asyncio.sleep(1.5)  # the subscriber reconnects within its capped backoff
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        waiting = asyncio.create_task(store.wait(key, LONG, 60))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await holder_store.commit(holder, b"v1", ttl=LONG)
        await asyncio.wait_for(waiting, 0.15)
        assert (await acquire_lease(store, key)).data == b"v1"


async def test_read_only_replica_is_unavailable(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    primary, replica = redis_server_factory(), redis_server_factory()
    with _raw(replica.port) as raw:
        raw.replicaof(HOST, primary.port)
    async with RedisStore(replica.url) as store:
        with pytest.raises(StoreUnavailable) as caught:
            await store.create(new_key(), b"v0", ttl=LONG)
        assert isinstance(caught.value.__cause__, redis.exceptions.ReadOnlyError)


async def test_other_redis_errors_are_store_errors(store: RedisStore, redis_url: str) -> None:
    key = new_key()
    with _raw(int(redis_url.rsplit(":", 1)[1].split("/")[0])) as raw:
        raw.set(f"sessionware:{{{key}}}", "not a hash")
    with pytest.raises(StoreError) as caught:
        await store.read(key)
    assert not isinstance(caught.value, StoreUnavailable)
    assert isinstance(caught.value.__cause__, redis.exceptions.ResponseError)


# -- configuration ---------------------------------------------------------------------------


async def test_bad_configuration_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(redis_url, prefix="a{b}:")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError):
            RedisStore(client=client)
    finally:
        await client.aclose()


async def test_a_given_client_is_used_and_left_open(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with RedisStore(client=client) as store:
            key = new_key()
            assert await store.create(key, b"v0", ttl=LONG)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_burst_past_the_pool_size_waits_for_connections(redis_url: str) -> None:
    async with RedisStore(redis_url, max_connections=2) as store:
        keys = [new_key() for _ in range(40)]
        created = await asyncio.gather(*(store.create(k, b"v", ttl=LONG) for k in keys))
        assert all(created)
        assert await asyncio.gather(*(store.read(k) for k in keys)) == [b"v"] * 40
