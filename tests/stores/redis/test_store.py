"""RedisStore beyond the contract, on both faces (``RedisStore`` and its
generated twin ``SyncRedisStore``) and on both command paths (the lean path and
plain redis-py, ``lean=False``): round trips, notification wake-ups, the
subscriber's lifecycle, faults and recovery, configuration, fork. Every test
runs against a real valkey-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from sessionware import ConfigurationError, StoreError, StoreUnavailable
from sessionware._sync.io.redis_pipe import LeanPath as SyncLeanPath
from sessionware.stores import Lease, Locked, RedisStore, SyncRedisStore, SyncStore
from sessionware.stores._redis_protocol import pack
from tests.support.servers.redis import HOST, CountingProxy, RedisServer
from tests.support.store_contract import LONG, acquire_lease, new_key

Either = RedisStore | SyncRedisStore

SIDES = ["async", "sync"]
LEAN = pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
EACH_SIDE = pytest.mark.parametrize("side", SIDES)
SUBSCRIBER = "sessionware-redis-wakeups"  # the sync face's subscriber thread


def make(side: str, url: str, **options: Any) -> Either:
    """A RedisStore, or on the sync side the twin the WSGI middleware makes of it."""
    store = RedisStore(url, **options)
    return store.sync() if side == "sync" else store  # type: ignore[return-value]


async def call(store: Either, operation: str, *args: Any, **kwargs: Any) -> Any:
    """One operation of either face from an async test: the sync face's on a
    thread of its own, so the loop keeps serving (a proxy, a listener)."""
    method = getattr(store, operation)
    if isinstance(store, SyncStore):
        return await asyncio.to_thread(method, *args, **kwargs)
    return await method(*args, **kwargs)


async def close(store: Either) -> None:
    await call(store, "close" if isinstance(store, SyncStore) else "aclose")


async def lease_of(store: Either, key: str) -> Any:
    got = await call(store, "acquire", key, lease_ttl=LONG)
    assert isinstance(got, Lease), got
    return got


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _raw(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=5.0)


def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


def subscribers(port: int, channel: str) -> int:
    with _raw(port) as raw:
        return int(raw.pubsub_numsub(channel)[0][1])


def subscriber_threads() -> int:
    return sum(thread.name == SUBSCRIBER for thread in threading.enumerate())


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


@pytest.fixture
def sync_store(redis_url: str) -> Iterator[SyncRedisStore]:
    with SyncRedisStore(redis_url) as store:
        yield store


# -- the two faces -------------------------------------------------------------------


def test_the_sync_face_is_the_generated_twin_built_with_the_same_arguments(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url, prefix="twin:", socket_timeout=1.5, lean=False)
    twin = store.sync()
    assert type(twin) is SyncRedisStore
    assert twin._prefix == "twin:" and twin._lean is None
    assert isinstance(twin._client, redis.Redis)
    assert twin.sync() is twin
    twin.close()
    lean_twin = RedisStore(redis_url).sync()
    assert isinstance(lean_twin._lean, SyncLeanPath)
    lean_twin.close()


# -- round trips -------------------------------------------------------------------


@LEAN
@EACH_SIDE
async def test_every_operation_is_one_evalsha(side: str, lean: bool,
                                              proxy: CountingProxy) -> None:
    store = make(side, proxy.url, lean=lean)
    assert (store._lean is not None) is lean
    try:
        await call(store, "setup")
        key = new_key()
        proxy.take()  # setup: connection handshake and SCRIPT LOAD
        assert await call(store, "create", key, b"v0", ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        lease = await lease_of(store, key)
        assert proxy.take() == ["EVALSHA"]
        assert isinstance(await call(store, "acquire", key, lease_ttl=LONG), Locked)
        assert proxy.take() == ["EVALSHA"]
        await call(store, "renew", lease, lease_ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        assert await call(store, "read", key, ttl=LONG) == b"v0"
        assert proxy.take() == ["EVALSHA"]
        await call(store, "commit", lease, b"v1", ttl=LONG)
        assert proxy.take() == ["EVALSHA"]
        lease = await lease_of(store, key)
        proxy.take()
        await call(store, "release", lease, ttl=LONG, refresh_after=1.0)
        assert proxy.take() == ["EVALSHA"]
        lease = await lease_of(store, key)
        proxy.take()
        await call(store, "delete", lease)
        assert proxy.take() == ["EVALSHA"]
    finally:
        await close(store)


@LEAN
@EACH_SIDE
async def test_scripts_missing_after_script_flush_are_reloaded(
    side: str, lean: bool, proxy: CountingProxy, redis_server: RedisServer
) -> None:
    store = make(side, proxy.url, lean=lean)
    try:
        await call(store, "setup")
        key = new_key()
        assert await call(store, "create", key, b"v0", ttl=LONG)
        with _raw(redis_server.port) as raw:
            raw.script_flush()
        proxy.take()
        lease = await lease_of(store, key)
        assert proxy.take() == ["EVALSHA", "SCRIPT", "EVALSHA"]  # NOSCRIPT, load, rerun
        await call(store, "commit", lease, b"v1", ttl=LONG)
        assert await call(store, "read", key) == b"v1"
    finally:
        await close(store)


# -- wake-ups by notification --------------------------------------------------------


async def _subscribed(store: Either, key: str, port: int, channel: str) -> None:
    """Start the store's subscriber; return once the server lists it and the
    store has read the confirmation (from then on a waiter waits for messages)."""
    await call(store, "wait", key, 0.01, 0)
    await asyncio.to_thread(until, lambda: subscribers(port, channel) == 1,
                            "the subscriber subscribed")
    await asyncio.to_thread(until, lambda: store._wakeups._listening,
                            "the store read the subscription's confirmation")


@pytest.mark.parametrize("topology", ["single", "cluster"])
@EACH_SIDE
async def test_a_release_wakes_a_waiter_by_notification(
    side: str, topology: str, request: pytest.FixtureRequest
) -> None:
    cluster = topology == "cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    prefix = f"t{secrets.token_hex(4)}:"
    waiter_store = make(side, url, cluster=cluster, prefix=prefix)
    holder_store = make(side, url, cluster=cluster, prefix=prefix)
    try:
        await call(waiter_store, "setup")
        await call(holder_store, "setup")
        key = new_key()
        assert await call(holder_store, "create", key, b"v0", ttl=LONG)
        holder = await lease_of(holder_store, key)
        if cluster:  # subscribed to one node of several: the server list is per node
            await call(waiter_store, "wait", key, 0.01, 0)
            await asyncio.to_thread(until, lambda: waiter_store._wakeups._listening,
                                    "the store read the subscription's confirmation")
        else:
            await _subscribed(waiter_store, key, port_of(url), f"{prefix}wake")
        assert isinstance(await call(waiter_store, "acquire", key, lease_ttl=LONG), Locked)
        # attempt 60: the fallback re-check sleeps 0.5 s or more; only a message is prompt
        waiting = asyncio.ensure_future(call(waiter_store, "wait", key, LONG, 60))
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done, "the waiter polled instead of waiting for a message"
        released = time.monotonic()
        await call(holder_store, "commit", holder, b"v1", ttl=LONG)
        committed = time.monotonic()
        await asyncio.wait_for(waiting, 5.0)
        woken = time.monotonic()
        assert woken - released < 0.15, f"commit {committed - released:.3f} s, woken after " \
            f"{woken - released:.3f} s: by a re-check, not by the message"
        assert isinstance(await call(waiter_store, "acquire", key, lease_ttl=LONG), Lease)
    finally:
        await close(waiter_store)
        await close(holder_store)


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
        await asyncio.to_thread(until, lambda: subscribers(server.port, "one:wake") == 1,
                                "the subscriber subscribed")
        with _raw(server.port) as raw:
            subscribed = [c for c in raw.client_list() if int(c["sub"]) > 0]
        assert len(subscribed) == 1
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def test_the_sync_subscriber_is_one_thread_from_the_first_wait_to_close(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    """At most one subscriber thread per store, started by the first wait (not
    by setup or operations), shared by every waiting thread, ended by close."""
    server = redis_server_factory()
    before = subscriber_threads()
    store = RedisStore(server.url, prefix="thread:").sync()
    store.setup()
    key = new_key()
    assert store.create(key, b"v0", ttl=LONG)
    assert isinstance(store.acquire(key, lease_ttl=LONG), Lease)
    assert subscriber_threads() == before

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: store.wait(key, 0.05, 0), range(32)))
    assert subscriber_threads() == before + 1
    until(lambda: subscribers(server.port, "thread:wake") == 1, "the subscriber subscribed")

    store.close()
    assert subscriber_threads() == before  # close waited for the thread to end
    until(lambda: subscribers(server.port, "thread:wake") == 0,
          "the subscriber's connection closed")
    store.wait(key, 0.01, 0)  # waiting after close polls: no subscriber again
    assert subscriber_threads() == before


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


# -- purging -----------------------------------------------------------------------------


@EACH_SIDE
async def test_purge_expired_is_zero_and_reports_no_progress(side: str, redis_url: str) -> None:
    store = make(side, redis_url)
    batches: list[int] = []
    try:
        assert await call(store, "purge_expired", progress=batches.append) == 0
        assert batches == []
    finally:
        await close(store)


# -- faults ----------------------------------------------------------------------------------


@LEAN
@EACH_SIDE
async def test_stopped_server_is_unavailable_then_recovers(
    side: str, lean: bool, redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    store = make(side, server.url, socket_timeout=1.0, lean=lean)
    holder_store = make(side, server.url, lean=lean)
    try:
        await call(store, "setup")
        await call(holder_store, "setup")
        key = new_key()
        assert await call(store, "create", key, b"v0", ttl=LONG)
        lease = await lease_of(store, key)
        await _subscribed(store, key, server.port, "sessionware:wake")  # before the outage
        server.stop()
        for operation, args, kwargs in [
            ("acquire", (key,), {"lease_ttl": LONG}),
            ("read", (key,), {}),
            ("create", (new_key(), b"x"), {"ttl": LONG}),
            ("commit", (lease, b"v1"), {"ttl": LONG}),
            ("release", (lease,), {}),
            ("renew", (lease,), {"lease_ttl": LONG}),
            ("delete", (lease,), {}),
        ]:
            with pytest.raises(StoreUnavailable) as caught:
                await call(store, operation, *args, **kwargs)
            assert isinstance(caught.value.__cause__, redis.exceptions.RedisError), operation
        await call(store, "wait", key, 0.05, 3)  # waiting during an outage returns, never raises
        await asyncio.to_thread(until, lambda: not store._wakeups._listening,
                                "the subscriber saw the outage")

        server.start()  # same port, empty data set
        assert await call(store, "create", key, b"v0", ttl=LONG)
        holder = await lease_of(holder_store, key)
        # the subscriber reconnects within its capped backoff
        await asyncio.to_thread(until, lambda: store._wakeups._listening,
                                "the subscriber resubscribed")
        assert isinstance(await call(store, "acquire", key, lease_ttl=LONG), Locked)
        waiting = asyncio.ensure_future(call(store, "wait", key, LONG, 60))
        done, _ = await asyncio.wait([waiting], timeout=0.2)
        assert not done
        await call(holder_store, "commit", holder, b"v1", ttl=LONG)
        await asyncio.wait_for(waiting, 0.15)
        assert (await lease_of(store, key)).data == b"v1"
    finally:
        await close(store)
        await close(holder_store)


def test_a_thread_whose_connection_the_server_closed_reconnects_before_sending(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    """The sync lean path keeps a connection per thread: one the server closed
    while its thread was away (a restart) is replaced before a command goes
    into it, so the thread's next request is served, not refused with 503."""
    server = redis_server_factory()
    store = RedisStore(server.url).sync()
    thread = ThreadPoolExecutor(max_workers=1)  # one thread, its one connection
    try:
        key = new_key()
        assert thread.submit(store.create, key, b"v0", ttl=LONG).result()
        server.stop()
        server.start()  # same port, empty data set
        assert thread.submit(store.create, key, b"v1", ttl=LONG).result()
        assert thread.submit(store.read, key).result() == b"v1"
    finally:
        thread.shutdown()
        store.close()


@LEAN
@EACH_SIDE
async def test_read_only_replica_is_unavailable(
    side: str, lean: bool, redis_server_factory: Callable[[], RedisServer],
) -> None:
    primary, replica = redis_server_factory(), redis_server_factory()
    with _raw(replica.port) as raw:
        raw.replicaof(HOST, primary.port)
    store = make(side, replica.url, lean=lean)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await call(store, "create", new_key(), b"v0", ttl=LONG)
        assert isinstance(caught.value.__cause__, redis.exceptions.ReadOnlyError)
        assert caught.value.maybe_applied is False  # a refusal: nothing was written
    finally:
        await close(store)


@LEAN
@EACH_SIDE
async def test_a_server_out_of_memory_refuses_and_the_answer_says_nothing_was_saved(
    side: str, lean: bool, redis_server_factory: Callable[[], RedisServer],
) -> None:
    """OOM refuses a script at its first write: the commit was not applied,
    the lease still holds the session, and the data is the last committed."""
    server = redis_server_factory()
    store = make(side, server.url, lean=lean)
    try:
        key = new_key()
        assert await call(store, "create", key, b"v0", ttl=LONG)
        lease = await lease_of(store, key)
        with _raw(server.port) as raw:
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", 1)  # below what the server holds already
        with pytest.raises(StoreUnavailable) as caught:
            await call(store, "commit", lease, b"v1" * 1000, ttl=LONG)
        assert isinstance(caught.value.__cause__, redis.exceptions.OutOfMemoryError)
        assert caught.value.maybe_applied is False
        with _raw(server.port) as raw:
            raw.config_set("maxmemory", 0)
        assert await call(store, "read", key) == b"v0"
        await call(store, "commit", lease, b"v1", ttl=LONG)  # still its holder
        assert await call(store, "read", key) == b"v1"
    finally:
        await close(store)


@LEAN
@EACH_SIDE
async def test_other_redis_errors_are_store_errors(side: str, lean: bool, redis_url: str) -> None:
    store = make(side, redis_url, lean=lean)
    try:
        key = new_key()
        with _raw(port_of(redis_url)) as raw:
            raw.set(f"sessionware:{{{key}}}", "not a hash")
        with pytest.raises(StoreError) as caught:
            await call(store, "read", key)
        assert not isinstance(caught.value, StoreUnavailable)
        assert isinstance(caught.value.__cause__, redis.exceptions.ResponseError)
    finally:
        with _raw(port_of(redis_url)) as raw:  # the server is shared: a scan would meet it
            raw.delete(f"sessionware:{{{key}}}")
        await close(store)


@LEAN
@EACH_SIDE
async def test_wrong_credentials_are_a_store_error_a_busy_server_is_unavailable(
    side: str, lean: bool, redis_server_factory: Callable[[], RedisServer],
) -> None:
    """Errors of redis-py's own classes (WRONGPASS) and of the table's (BUSY,
    which redis-py leaves a plain ResponseError) mean the same on both paths."""
    server = redis_server_factory()
    with _raw(server.port) as raw:
        raw.config_set("busy-reply-threshold", 50)
        raw.execute_command("ACL", "SETUSER", "app", "on", ">right", "allcommands", "allkeys")
    url = server.url.replace("redis://", "redis://app:wrong@")
    store = make(side, url, lean=lean)
    try:
        with pytest.raises(StoreError) as caught:
            await call(store, "read", new_key())
        assert not isinstance(caught.value, StoreUnavailable)
        assert isinstance(caught.value.__cause__, redis.exceptions.AuthenticationError)
    finally:
        await close(store)

    store = make(side, server.url, lean=lean)
    with _busy(server.port):
        try:
            with pytest.raises(StoreUnavailable) as unavailable:
                await call(store, "read", new_key())
            assert "busy" in str(unavailable.value).lower()
        finally:
            await close(store)


class _busy:
    """A server busy running a script (past ``busy-reply-threshold``), until the
    block ends and kills it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.thread = threading.Thread(target=self._spin)

    def _spin(self) -> None:
        with redis.Redis(host=HOST, port=self.port, socket_timeout=30) as spinner, \
                contextlib.suppress(redis.exceptions.ResponseError):  # killed
            spinner.eval("while true do end", 0)

    def __enter__(self) -> None:
        self.thread.start()
        probe = SyncLeanPath(HOST, self.port, timeout=5.0)

        def busy() -> bool:
            try:
                probe.execute(pack("PING"))
            except redis.exceptions.ResponseError:
                return True
            return False

        try:
            until(busy, "the server runs the script past its threshold")
        finally:
            probe.close()

    def __exit__(self, *exc_info: object) -> None:
        with _raw(self.port) as raw:
            raw.script_kill()
        self.thread.join(10)


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
    with redis.Redis.from_url(redis_url, decode_responses=True) as sync_client, \
            pytest.raises(ConfigurationError):
        SyncRedisStore(client=sync_client)


async def test_a_client_of_the_other_face_is_refused_with_the_client_to_pass(
    redis_url: str,
) -> None:
    async_client = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisStore(client=async_client)  # right for ASGI...
        with pytest.raises(ConfigurationError) as caught:
            store.sync()  # ...but the WSGI middleware's blocking face cannot use it
        assert "SyncRedisStore(client=redis.Redis(...))" in str(caught.value)
    finally:
        await async_client.aclose()
    with redis.Redis.from_url(redis_url) as sync_client, \
            pytest.raises(ConfigurationError) as caught:
        RedisStore(client=sync_client)
    assert "RedisStore(client=redis.asyncio.Redis(...))" in str(caught.value)


async def test_a_given_client_is_used_and_left_open(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with RedisStore(client=client) as store:
            assert store._lean is None
            key = new_key()
            assert await store.create(key, b"v0", ttl=LONG)
        assert await client.ping()
    finally:
        await client.aclose()


def test_a_given_sync_client_is_used_and_left_open(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        with SyncRedisStore(client=client) as store:
            assert store._lean is None
            assert store.create(new_key(), b"v0", ttl=LONG)
        assert client.ping()


async def test_a_burst_past_the_pool_size_waits_for_connections(redis_url: str) -> None:
    async with RedisStore(redis_url, max_connections=2, lean=False) as store:
        keys = [new_key() for _ in range(40)]
        created = await asyncio.gather(*(store.create(k, b"v", ttl=LONG) for k in keys))
        assert all(created)
        assert await asyncio.gather(*(store.read(k) for k in keys)) == [b"v"] * 40


def test_threads_past_the_pool_size_wait_for_connections(redis_url: str) -> None:
    with SyncRedisStore(redis_url, max_connections=2, lean=False) as store:
        keys = [new_key() for _ in range(40)]
        with ThreadPoolExecutor(16) as pool:
            assert all(pool.map(lambda k: store.create(k, b"v", ttl=LONG), keys))
            assert list(pool.map(store.read, keys)) == [b"v"] * 40


# -- fork ------------------------------------------------------------------------------------


def _connection_id(store: SyncRedisStore) -> int:
    assert store._lean is not None
    return int(store._lean.execute(pack("CLIENT", "ID")))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads, 3.12+
def test_a_forked_child_uses_neither_the_parents_connections_nor_its_subscriber(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    store = SyncRedisStore(server.url, prefix="fork:")
    store.setup()
    key = new_key()
    assert store.create(key, b"v0", ttl=LONG)
    parent_connection = _connection_id(store)
    store.wait(key, 0.01, 0)
    until(lambda: subscribers(server.port, "fork:wake") == 1, "the parent subscribed")

    pid = os.fork()
    if pid == 0:  # the child: report by exit status, never return into pytest
        status = 1
        try:
            assert store.read(key) == b"v0"
            assert _connection_id(store) != parent_connection
            store.wait(key, 0.01, 0)  # starts the child's own subscriber
            until(lambda: subscribers(server.port, "fork:wake") == 2, "the child subscribed")
            store.close()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    # the child closed its own connections, not the parent's
    assert _connection_id(store) == parent_connection
    assert store.read(key) == b"v0"
    until(lambda: subscribers(server.port, "fork:wake") == 1, "the child's subscriber left")
    store.close()
