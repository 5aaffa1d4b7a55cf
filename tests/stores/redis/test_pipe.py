"""RedisStore's lean path, on both faces: the async face's one shared,
auto-pipelined connection (``sessionware/_async/io/redis_pipe.py``), whose replies must
never reach the wrong caller; the sync face's blocking connection per thread
(``sessionware/_sync/io/redis_pipe.py``), closed when its thread ends and bounded
by the store call's deadline; and the error table both share
(``sessionware/stores/_redis_protocol.py``), checked against a real server's
replies and against what redis-py's own client raises for them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sessionware import StoreError, StoreUnavailable
from sessionware._async.stores.redis import ERRORS
from sessionware._sync.io.primitives import Deadlines
from sessionware._sync.io.redis_pipe import LeanPath as SyncLeanPath
from sessionware.stores import RedisStore, SyncRedisStore
from sessionware.stores._redis_protocol import REFUSED_FOR_NOW, RefusedForNow, pack, reply_error
from tests.stores.redis.test_store import _busy, until
from tests.support.servers.redis import HOST, RedisServer, free_port
from tests.support.store_contract import LONG, new_key


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url, socket_timeout=0.5) as store:
        assert store._lean is not None, "the lean path is under test"
        yield store


# -- the async face: one shared connection ------------------------------------------------


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
    assert store._lean is not None
    await store._lean.execute(pack("CLIENT", "SETNAME", name))
    await asyncio.gather(*(store.read(k) for k in keys))
    with redis_server.client() as probe:
        named = [c for c in probe.client_list() if c["name"] == name]
    assert len(named) == 1


async def test_a_stalled_server_times_out_then_the_connection_is_replaced(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    async with RedisStore(server.url, socket_timeout=0.3) as store:
        key = new_key()
        assert await store.create(key, b"v", ttl=LONG)
        with redis.Redis(host=HOST, port=server.port) as admin:
            admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            with pytest.raises(StoreUnavailable):
                await store.read(key)
            admin.execute_command("CLIENT", "UNPAUSE")
        assert await store.read(key) == b"v"


# -- the sync face: a blocking connection per thread ----------------------------------------


def _connection_ids(server: RedisServer) -> set[int]:
    with server.client() as probe:
        return {int(client["id"]) for client in probe.client_list()}


def _connection_id(store: SyncRedisStore) -> int:
    assert store._lean is not None
    return int(store._lean.execute(pack("CLIENT", "ID")))


def test_each_thread_has_its_own_connection_closed_when_the_thread_ends(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    with SyncRedisStore(server.url) as store:
        assert _connection_id(store) == _connection_id(store)  # one per thread, kept
        threads, ids, failures = 5, [], []
        all_in = threading.Barrier(threads)

        def request() -> None:
            try:
                key = new_key()
                assert store.create(key, b"v", ttl=LONG)
                assert store.read(key) == b"v"
                ids.append(_connection_id(store))
                all_in.wait(10)  # every thread's connection is open at once
            except BaseException as exc:
                failures.append(exc)
                all_in.abort()

        workers = [threading.Thread(target=request) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not failures
        assert len(set(ids)) == threads
        until(lambda: not set(ids) & _connection_ids(server),
              "every thread's connection closed with its thread")
        main = _connection_id(store)
    until(lambda: main not in _connection_ids(server), "close() closed this thread's")


def test_a_blocking_call_is_bounded_by_the_store_call_deadline_and_the_socket_timeout(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Nothing can cancel a blocking call: it bounds its own wait by what is left
    of the store call (the core's ``with deadlines.bound()``) and by the socket
    timeout, whichever is sooner; the connection it gave up on is not reused."""
    server = redis_server_factory()
    with SyncRedisStore(server.url, socket_timeout=30.0) as patient, \
            SyncRedisStore(server.url, socket_timeout=0.3) as impatient:
        key = new_key()
        assert patient.create(key, b"v", ttl=LONG)
        assert impatient.read(key) == b"v"
        server.stall()
        try:
            started = time.monotonic()
            with Deadlines(0.3).bound(), pytest.raises(StoreUnavailable):
                patient.read(key)  # retried once: the retry has no time left
            assert 0.2 <= time.monotonic() - started < 2.0

            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                impatient.read(key)  # no deadline: the socket timeout, twice (a retry)
            assert 0.4 <= time.monotonic() - started < 3.0
        finally:
            server.resume()
        assert patient.read(key) == b"v"
        assert impatient.read(key) == b"v"


# -- the error table, against a real server's replies ---------------------------------------


@dataclass
class Reply:
    """Where to send ``command`` to get the error reply under test."""

    port: int
    command: tuple[str | int, ...]
    username: str | None = None
    password: str | None = None
    same_message: bool = True  # False: redis-py gets the reply to its connect handshake


Provoke = Callable[[pytest.FixtureRequest], contextlib.AbstractContextManager[Reply]]


def _server(request: pytest.FixtureRequest) -> RedisServer:
    factory: Callable[..., RedisServer] = request.getfixturevalue("redis_server_factory")
    return factory()


@contextlib.contextmanager
def _noscript(request: pytest.FixtureRequest) -> Iterator[Reply]:
    yield Reply(request.getfixturevalue("redis_server").port, ("EVALSHA", "0" * 40, 0))


@contextlib.contextmanager
def _wrongtype(request: pytest.FixtureRequest) -> Iterator[Reply]:
    server: RedisServer = request.getfixturevalue("redis_server")
    key = f"wrongtype:{new_key()}"
    with server.client() as admin:
        admin.set(key, "a string")
    yield Reply(server.port, ("HGET", key, "field"))


@contextlib.contextmanager
def _readonly(request: pytest.FixtureRequest) -> Iterator[Reply]:
    primary, replica = _server(request), _server(request)
    with replica.client() as admin:
        admin.replicaof(HOST, primary.port)
    yield Reply(replica.port, ("SET", "k", "v"))


@contextlib.contextmanager
def _masterdown(request: pytest.FixtureRequest) -> Iterator[Reply]:
    replica = _server(request)
    with replica.client() as admin:
        admin.config_set("replica-serve-stale-data", "no")
        admin.replicaof(HOST, free_port())  # nobody there: the link stays down
    yield Reply(replica.port, ("GET", "k"))


@contextlib.contextmanager
def _loading(request: pytest.FixtureRequest) -> Iterator[Reply]:
    """A replica loading its primary's data set, slowly (``key-load-delay``)."""
    primary, replica = _server(request), _server(request)
    with primary.client() as admin:
        admin.config_set("repl-diskless-sync-delay", 0)  # no wait for other replicas
        pipe = admin.pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"k{i}", "v")
        pipe.execute()
    with replica.client() as admin:
        admin.config_set("key-load-delay", 1000)  # µs per key: 2 s to load
        admin.config_set("loading-process-events-interval-bytes", 1024)
        admin.replicaof(HOST, primary.port)
        until(lambda: admin.info("persistence")["loading"] == 1, "the replica loads", 10)
    yield Reply(replica.port, ("GET", "k"))


@contextlib.contextmanager
def _clusterdown(request: pytest.FixtureRequest) -> Iterator[Reply]:
    node = RedisServer(cluster=True)  # cluster-enabled, but serving no slot
    node.start()
    try:
        yield Reply(node.port, ("GET", "k"))
    finally:
        node.cleanup()


def _slot_owner(port: int, slot: int) -> tuple[int, str]:
    """The port and node id of the cluster node that serves ``slot``."""
    with redis.Redis(host=HOST, port=port) as node:
        for start, end, primary, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1]), primary[2].decode()
    raise AssertionError(f"no node serves slot {slot}")


@contextlib.contextmanager
def _moved(request: pytest.FixtureRequest) -> Iterator[Reply]:
    nodes: list[tuple[str, int]] = request.getfixturevalue("redis_cluster_nodes")
    ports = [port for _, port in nodes]
    with redis.Redis(host=HOST, port=ports[0]) as node:
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", "moved"))
    owner, _ = _slot_owner(ports[0], slot)
    yield Reply(next(port for port in ports if port != owner), ("GET", "moved"))


@contextlib.contextmanager
def _migrating(request: pytest.FixtureRequest, key: str, *present: str) -> Iterator[int]:
    """The slot of ``key`` migrating away from its node (whose port this yields),
    with the keys ``present`` (of the same slot) on it."""
    nodes: list[tuple[str, int]] = request.getfixturevalue("redis_cluster_nodes")
    ports = [port for _, port in nodes]
    with redis.Redis(host=HOST, port=ports[0]) as node:
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
    owner, _ = _slot_owner(ports[0], slot)
    target = next(port for port in ports if port != owner)
    with redis.Redis(host=HOST, port=target) as node:
        target_id = node.execute_command("CLUSTER", "MYID").decode()
    with redis.Redis(host=HOST, port=owner) as node:
        for name in present:
            node.set(name, "v")
        node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            yield owner
        finally:
            node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            if present:
                node.delete(*present)


@contextlib.contextmanager
def _ask(request: pytest.FixtureRequest) -> Iterator[Reply]:
    with _migrating(request, "{ask}missing") as owner:
        yield Reply(owner, ("GET", "{ask}missing"))


@contextlib.contextmanager
def _tryagain(request: pytest.FixtureRequest) -> Iterator[Reply]:
    # one key here, one gone (moved, maybe): a multi-key command waits out the move
    with _migrating(request, "{tryagain}gone", "{tryagain}here") as owner:
        yield Reply(owner, ("MGET", "{tryagain}here", "{tryagain}gone"))


@contextlib.contextmanager
def _oom(request: pytest.FixtureRequest) -> Iterator[Reply]:
    server = _server(request)
    with server.client() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
    yield Reply(server.port, ("SET", "k", "v"))


@contextlib.contextmanager
def _busy_script(request: pytest.FixtureRequest) -> Iterator[Reply]:
    server = _server(request)
    with server.client() as admin:
        admin.config_set("busy-reply-threshold", 50)
    with _busy(server.port):
        yield Reply(server.port, ("GET", "k"))


@contextlib.contextmanager
def _misconf(request: pytest.FixtureRequest) -> Iterator[Reply]:
    """A server that cannot persist (its directory is gone) refuses writes."""
    server = _server(request)
    with server.client() as admin:
        admin.config_set("save", "3600 1")
        shutil.rmtree(server.dir)  # its working directory: no snapshot can be written
        admin.bgsave()
        until(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err",
              "the snapshot failed")
        try:
            yield Reply(server.port, ("SET", "k", "v"))
        finally:
            admin.config_set("save", "")  # or it would refuse to stop without a snapshot


@contextlib.contextmanager
def _max_clients(request: pytest.FixtureRequest) -> Iterator[Reply]:
    server = _server(request)
    with server.client() as admin:
        admin.ping()
        admin.config_set("maxclients", 1)  # this connection is the one
        try:
            yield Reply(server.port, ("PING",))
        finally:
            admin.config_set("maxclients", 10000)


@contextlib.contextmanager
def _password_required(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = _server(request)
    with server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "limited", "on", ">secret", "~*", "+get")
        admin.config_set("requirepass", "secret")
    yield server


@contextlib.contextmanager
def _noauth(request: pytest.FixtureRequest) -> Iterator[Reply]:
    with _password_required(request) as server:
        yield Reply(server.port, ("GET", "k"), same_message=False)


@contextlib.contextmanager
def _wrongpass(request: pytest.FixtureRequest) -> Iterator[Reply]:
    with _password_required(request) as server:
        yield Reply(server.port, ("GET", "k"), password="wrong")


@contextlib.contextmanager
def _noperm(request: pytest.FixtureRequest) -> Iterator[Reply]:
    with _password_required(request) as server:
        yield Reply(server.port, ("SET", "k", "v"), username="limited", password="secret")


# reply -> (how to provoke it, the class both paths raise or a subclass of it, as
# the installed redis-py decides; whether the store is then unavailable rather
# than wrong)
CASES: dict[str, tuple[Provoke, type[redis.exceptions.RedisError], bool]] = {
    "NOSCRIPT": (_noscript, redis.exceptions.NoScriptError, False),
    "WRONGTYPE (not in the table)": (_wrongtype, redis.exceptions.ResponseError, False),
    "READONLY": (_readonly, redis.exceptions.ReadOnlyError, True),
    "MASTERDOWN": (_masterdown, redis.exceptions.MasterDownError, True),
    "LOADING": (_loading, redis.exceptions.BusyLoadingError, True),
    "CLUSTERDOWN": (_clusterdown, redis.exceptions.ClusterDownError, True),
    "MOVED": (_moved, redis.exceptions.MovedError, True),
    "ASK": (_ask, redis.exceptions.AskError, True),
    "TRYAGAIN": (_tryagain, redis.exceptions.TryAgainError, True),
    "OOM": (_oom, redis.exceptions.OutOfMemoryError, True),
    "BUSY": (_busy_script, RefusedForNow, True),
    "MISCONF": (_misconf, RefusedForNow, True),
    "ERR max number of clients reached": (_max_clients, redis.exceptions.ConnectionError, True),
    "NOAUTH": (_noauth, redis.exceptions.AuthenticationError, False),
    "WRONGPASS": (_wrongpass, redis.exceptions.AuthenticationError, False),
    "NOPERM": (_noperm, redis.exceptions.NoPermissionError, False),
}


def test_every_reply_redis_py_leaves_unclassified_is_checked_here() -> None:
    assert set(REFUSED_FOR_NOW) <= set(CASES)


@pytest.mark.parametrize("reply", CASES)
def test_the_error_table_against_a_real_servers_reply(
    reply: str, request: pytest.FixtureRequest
) -> None:
    provoke, expected, unavailable = CASES[reply]
    with provoke(request) as where:
        lean = SyncLeanPath(HOST, where.port, username=where.username,
                            password=where.password, timeout=5.0)
        try:
            with pytest.raises(redis.exceptions.RedisError) as by_lean:
                lean.execute(pack(*where.command))
        finally:
            lean.close()
        client = redis.Redis(host=HOST, port=where.port, username=where.username,
                             password=where.password, socket_timeout=5.0,
                             retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(redis.exceptions.RedisError) as by_redis_py:
                client.execute_command(*where.command)
        finally:
            client.close()

    assert isinstance(by_lean.value, expected), by_lean.value
    if expected is RefusedForNow:  # redis-py has no class: a plain ResponseError, whole
        assert type(by_lean.value) is expected
        assert type(by_redis_py.value) is redis.exceptions.ResponseError
        assert type(reply_error(str(by_redis_py.value))) is expected
    else:  # the class redis-py's own client raises, with the same message
        assert type(by_lean.value) is type(by_redis_py.value), by_redis_py.value
        if where.same_message:
            assert str(by_lean.value) == str(by_redis_py.value)
    for error in (by_lean.value, by_redis_py.value):  # the same meaning by either path
        translated = ERRORS.translate("read", f"{HOST}:{where.port}", error)
        assert isinstance(translated, StoreError)
        assert isinstance(translated, StoreUnavailable) is unavailable, translated
