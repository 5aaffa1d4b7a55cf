"""RedisStore.watch_expired, on both faces, against real valkey-servers started
with keyspace notifications on (``notify-keyspace-events Ex``) or off: each
expiry reported once with its store key, once across watchers, never a
bookkeeping record's; off (or refused) configuration; close; a cluster."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from sessionware._async.core import RETIRED
from sessionware._async.users import INDEX_MARK
from sessionware.stores import SyncRedisStore, SyncStore
from sessionware.stores._redis_protocol import sends_expiries, store_key
from tests.stores.redis.test_store import Either, _raw, call, close, lease_of, make, until
from tests.support.processes import ROOT
from tests.support.servers.redis import HOST, RedisServer, start_cluster
from tests.support.store_contract import LONG, new_key

EACH_SIDE = pytest.mark.parametrize("side", ["async", "sync"])
CHANNEL = "__keyevent@0__:expired"
SHORT = 0.2  # a session's ttl in these tests
BOUND = 10.0  # the longest a test waits for a report (Redis expires within ~0.1 s)


class Heard:
    """Store keys, appended from any thread (the sync face's listener) or the
    loop; a test waits on a condition, never a bare sleep."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._changed = threading.Condition()

    def add(self, key: str) -> None:
        with self._changed:
            self.keys.append(key)
            self._changed.notify_all()

    def reporter(self, store: Either) -> Callable[[str], Any]:
        """``report`` for ``store``'s face: a plain function on the sync face."""
        if isinstance(store, SyncStore):
            return self.add

        async def report(key: str) -> None:
            self.add(key)

        return report

    def wait(self, holds: Callable[[list[str]], bool]) -> bool:
        """Whether ``holds(keys)`` came true within ``BOUND`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: holds(self.keys), BOUND)

    async def until(self, holds: Callable[[list[str]], bool]) -> None:
        if not await asyncio.to_thread(self.wait, holds):
            pytest.fail(f"not heard within {BOUND} s; heard {self.keys}")


def spy(store: Either, handled: Heard) -> None:
    """Record each expired key of ``store`` it has handled (claimed or not),
    so a test knows when every watcher had its chance to report."""
    original = store._expired

    def record(rkey: bytes) -> None:
        key = store_key(store._prefix, rkey)
        if key is not None:
            handled.add(key)

    if isinstance(store, SyncStore):
        def heard(report: Any, rkey: bytes) -> None:
            original(report, rkey)
            record(rkey)
    else:
        async def heard(report: Any, rkey: bytes) -> None:
            await original(report, rkey)
            record(rkey)
    store._expired = heard  # type: ignore[method-assign]


def subscribed(port: int, count: int) -> None:
    """Wait until the server lists ``count`` subscribers of the expiry channel."""
    def numsub() -> int:
        with _raw(port) as raw:
            return int(raw.pubsub_numsub(CHANNEL)[0][1])
    until(lambda: numsub() == count, f"{count} subscribers of {CHANNEL} on {port}")


async def watching(store: Either, heard: Heard, *ports: int, count: int = 1) -> None:
    await call(store, "setup")
    assert await call(store, "watch_expired", heard.reporter(store)) is True
    for port in ports:
        await asyncio.to_thread(subscribed, port, count)


def prefix() -> str:
    return f"exp{secrets.token_hex(3)}:"


@pytest.fixture
def server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory(notify="Ex")


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    nodes = start_cluster(notify="Ex")
    yield nodes
    for node in nodes:
        node.cleanup()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
@EACH_SIDE
async def test_an_expired_session_is_reported_once_with_its_store_key(
    side: str, lean: bool, server: RedisServer,
) -> None:
    store, heard = make(side, server.url, prefix=prefix(), lean=lean), Heard()
    try:
        await watching(store, heard, server.port)
        key, then = new_key(), new_key()
        assert await call(store, "create", key, b"v0", ttl=SHORT)
        assert await call(store, "create", then, b"v0", ttl=SHORT * 2)
        await heard.until(lambda keys: then in keys)
        assert heard.keys == [key, then]  # its store key, once, in order
    finally:
        await close(store)


@pytest.mark.parametrize("sides", [("async", "async"), ("sync", "sync"), ("async", "sync")])
async def test_two_watchers_of_one_server_report_each_expiry_once_in_all(
    sides: tuple[str, str], server: RedisServer,
) -> None:
    shared = prefix()
    stores = [make(side, server.url, prefix=shared) for side in sides]
    reported, handled = Heard(), [Heard(), Heard()]
    try:
        for store, spied in zip(stores, handled, strict=True):
            spy(store, spied)
            await call(store, "setup")
            assert await call(store, "watch_expired", reported.reporter(store)) is True
        await asyncio.to_thread(subscribed, server.port, 2)
        keys = [new_key() for _ in range(8)]
        for key in keys:
            assert await call(stores[0], "create", key, b"v0", ttl=SHORT)
        for spied in handled:  # both heard every expiry and tried to claim it
            await spied.until(lambda got: len(got) == len(keys))
        assert sorted(reported.keys) == sorted(keys)
    finally:
        for store in stores:
            await close(store)


def watcher_process(url: str, shared: str) -> None:
    """A process of its own watching the store: it prints ``handled <key>``
    for each expiry it handled and ``reported <key>`` for each it reported,
    until its stdin closes."""
    store = SyncRedisStore(url, prefix=shared)
    handled = Heard()
    spy(store, handled)
    handled.add = lambda key: print("handled", key, flush=True)  # type: ignore[method-assign]
    store.setup()
    assert store.watch_expired(lambda key: print("reported", key, flush=True))
    sys.stdin.read()
    store.close()


def read_lines(stream: IO[str], by_word: dict[str, Heard]) -> None:
    for line in stream:
        word, key = line.split()
        by_word[word].add(key)


def test_two_watcher_processes_report_each_expiry_once_in_all(server: RedisServer) -> None:
    shared = prefix()
    reported, handled = Heard(), [Heard(), Heard()]
    command = [sys.executable, "-c", "import sys; from tests.stores.redis.test_expired import "
               "watcher_process; watcher_process(sys.argv[1], sys.argv[2])", server.url, shared]
    children = [subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in handled]
    readers = []
    try:
        for child, spied in zip(children, handled, strict=True):
            assert child.stdout is not None
            readers.append(threading.Thread(
                target=read_lines, args=(child.stdout, {"handled": spied, "reported": reported})))
            readers[-1].start()
        subscribed(server.port, 2)
        keys = [new_key() for _ in range(8)]
        with SyncRedisStore(server.url, prefix=shared) as store:
            for key in keys:
                assert store.create(key, b"v0", ttl=SHORT)
        for spied in handled:
            assert spied.wait(lambda got: len(got) == len(keys)), spied.keys
        assert sorted(reported.keys) == sorted(keys)
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child, reader in zip(children, readers, strict=False):
            assert child.wait(10) == 0
            reader.join(10)
            assert child.stdout is not None
            child.stdout.close()


@EACH_SIDE
async def test_bookkeeping_records_are_not_reported(side: str, server: RedisServer) -> None:
    """A user index (created with NUL-prefixed data) and a tombstone (a
    session committed to NUL-prefixed data) expire unreported."""
    store, heard, handled = make(side, server.url, prefix=prefix()), Heard(), Heard()
    spy(store, handled)
    try:
        await watching(store, heard, server.port)
        index, tombstone, session = new_key(), new_key(), new_key()
        assert await call(store, "create", index, INDEX_MARK + b"{}", ttl=SHORT)
        assert await call(store, "create", tombstone, b"v0", ttl=LONG)
        await call(store, "commit", await lease_of(store, tombstone), RETIRED, ttl=SHORT)
        assert await call(store, "create", session, b"v0", ttl=SHORT)
        await handled.until(lambda got: len(got) == 3)
        assert heard.keys == [session]
    finally:
        await close(store)


@EACH_SIDE
async def test_a_bookkeeping_marker_outlives_its_record_and_follows_its_slides(
    side: str, server: RedisServer,
) -> None:
    """The marker's deadline stays a margin past the record's as reads and
    releases slide it; a session's writes leave no marker."""
    store = make(side, server.url, prefix=prefix())
    key, session = new_key(), new_key()
    rkey = f"{store._prefix}{{{key}}}"

    def margin() -> int:
        with _raw(server.port) as raw:
            marker, record = raw.pexpiretime(rkey + ":x"), raw.pexpiretime(rkey)
        return int(marker) - int(record)

    try:
        await call(store, "setup")
        assert await call(store, "create", key, b"\x00index", ttl=1.0)
        assert margin() == 60_000
        assert await call(store, "read", key, ttl=100.0) == b"\x00index"
        assert margin() == 60_000
        await call(store, "release", await lease_of(store, key), ttl=200.0)
        assert margin() == 60_000
        assert await call(store, "create", session, b"v0", ttl=LONG)
        await call(store, "commit", await lease_of(store, session), b"v1", ttl=LONG)
        await call(store, "read", session, ttl=LONG * 2)
        with _raw(server.port) as raw:
            assert raw.exists(f"{store._prefix}{{{session}}}:x") == 0
    finally:
        await close(store)


@EACH_SIDE
async def test_with_notifications_off_it_warns_and_watches_nothing(
    side: str, redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_server_factory(notify="Kx")  # key-space channels only: no key events
    store = make(side, server.url)
    try:
        await call(store, "setup")
        with caplog.at_level(logging.WARNING, logger="sessionware"):
            assert await call(store, "watch_expired", Heard().reporter(store)) is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "CONFIG SET notify-keyspace-events Ex" in warnings[0].getMessage()
        with _raw(server.port) as raw:
            assert int(raw.pubsub_numsub(CHANNEL)[0][1]) == 0
    finally:
        await close(store)


@pytest.mark.parametrize(("flags", "sent"), [
    ("", False), ("Kx", False), ("Eg", False), ("A", False),
    ("Ex", True), ("xE", True), ("AE", True), ("KEA", True), ("Egx$", True),
])
def test_which_settings_send_expiries(flags: str, sent: bool) -> None:
    assert sends_expiries(flags) is sent


@EACH_SIDE
async def test_when_config_is_refused_it_watches_anyway_and_says_so(
    side: str, server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    with _raw(server.port) as raw:  # as a managed service: CONFIG is not the app's
        raw.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                        commands=["+@all", "-config"])
    store, heard = make(side, f"redis://app:pw@{HOST}:{server.port}/0"), Heard()
    try:
        with caplog.at_level(logging.INFO, logger="sessionware"):
            await watching(store, heard, server.port)
        assert any(r.levelno == logging.INFO and "notify-keyspace-events" in r.getMessage()
                   for r in caplog.records)
        key = new_key()
        assert await call(store, "create", key, b"v0", ttl=SHORT)
        await heard.until(lambda keys: keys == [key])
    finally:
        await close(store)


@EACH_SIDE
async def test_a_failing_report_leaves_the_watcher_running_and_close_stops_it(
    side: str, server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    store, heard = make(side, server.url, prefix=prefix()), Heard()
    first, then = new_key(), new_key()

    def add_or_fail(key: str) -> None:
        heard.add(key)
        if key == first:
            raise RuntimeError("report bug")

    async def async_add_or_fail(key: str) -> None:
        add_or_fail(key)

    try:
        await call(store, "setup")
        report = add_or_fail if isinstance(store, SyncStore) else async_add_or_fail
        assert await call(store, "watch_expired", report) is True
        await asyncio.to_thread(subscribed, server.port, 1)
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            assert await call(store, "create", first, b"v0", ttl=SHORT)
            assert await call(store, "create", then, b"v0", ttl=SHORT * 2)
            await heard.until(lambda keys: keys == [first, then])
        assert "report bug" in caplog.text
    finally:
        await close(store)
    await asyncio.to_thread(subscribed, server.port, 0)


@EACH_SIDE
async def test_a_cluster_reports_expiries_on_every_primary_once(
    side: str, cluster: list[RedisServer],
) -> None:
    shared = prefix()
    stores = [make(other, cluster[0].url, cluster=True, prefix=shared)
              for other in (side, "async")]
    reported, handled = Heard(), [Heard(), Heard()]
    try:
        for store, spied in zip(stores, handled, strict=True):
            spy(store, spied)
            await call(store, "setup")
            assert await call(store, "watch_expired", reported.reporter(store)) is True
        for node in cluster:
            await asyncio.to_thread(subscribed, node.port, 2)
        keys = [new_key() for _ in range(30)]  # all three nodes' slots, but for odds of 1e-5
        for key in keys:
            assert await call(stores[0], "create", key, b"v0", ttl=SHORT)
        for spied in handled:
            await spied.until(lambda got: len(got) == len(keys))
        assert sorted(reported.keys) == sorted(keys)
    finally:
        for store in stores:
            await close(store)


@EACH_SIDE
async def test_a_clusters_primaries_are_checked_against_cluster_slots(
    side: str, cluster: list[RedisServer],
) -> None:
    """The watcher's topology check holds while the primaries are the ones it
    subscribed to (a changed set makes it resubscribe)."""
    store = make(side, cluster[0].url, cluster=True)

    def check_sync() -> bool:
        with store._node_clients(every_primary=True) as clients:
            assert len(clients) == len(cluster)
            check = store._topology_check(clients[0], True)
            assert check is not None
            return bool(check())

    async def check_async() -> bool:
        async with store._node_clients(every_primary=True) as clients:
            assert len(clients) == len(cluster)
            check = store._topology_check(clients[0], True)
            assert check is not None
            return bool(await check())

    try:
        if isinstance(store, SyncStore):
            assert await asyncio.to_thread(check_sync)
        else:
            assert await check_async()
    finally:
        await close(store)
