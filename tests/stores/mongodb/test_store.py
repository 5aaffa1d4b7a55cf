"""MongoDBStore beyond the shared suites, on both faces, on the mongoeco
emulator and on a real server when MONGODB_URL names one: the TTL index,
expired documents absent while still stored, exact purges, the document size
limit, creates racing for one key, how waiters of another store (another
process's) are woken, and errors.

Where the emulator differs from MongoDB the test says so by name (the
constants of tests/support/servers/mongodb.py)."""

from __future__ import annotations

import asyncio
import datetime
import gc
import secrets
import time
from collections.abc import Callable
from typing import Any

import pymongo
import pymongo.monitoring
import pytest

from sessionware import ConfigurationError, SessionTooLarge, StoreError, StoreUnavailable
from sessionware._async.stores import _listener as listener_module
from sessionware._async.stores import mongodb as mongodb_module
from sessionware._sync.stores import mongodb as sync_mongodb_module
from sessionware.stores import Lease, Locked, MongoDBStore
from tests.support.faces import ThreadedStore, on_face, sync_face
from tests.support.mongo_wire import CommandCounter
from tests.support.processes import free_port
from tests.support.servers.mongodb import (
    EXPIRED_VANISH,
    FIRST_BATCH_WHOLE,
    NO_CHANGE_STREAMS,
    MongoecoServer,
    MongoTarget,
)
from tests.support.store_contract import LONG, acquire_lease, acquire_waiting, new_key

SHORT = 0.2
MARGIN = 0.3


def raw(target: MongoTarget) -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(target.url, serverSelectionTimeoutMS=5000, tz_aware=True)


async def test_setup_creates_the_ttl_index_once_from_eight_stores(
    mongodb: MongoTarget, face: str
) -> None:
    database = mongodb.database()
    driven = [on_face(MongoDBStore(mongodb.url, database=database), face) for _ in range(8)]
    try:
        await asyncio.gather(*(d.__aenter__() for d in driven))  # setup() at once
    finally:
        for d in driven:
            await d.__aexit__(None, None, None)
    with raw(mongodb) as client:
        indexes = client[database]["sessions"].index_information()
        client.drop_database(database)
    assert indexes["expires_at_ttl"]["key"] == [("expires_at", 1)]
    assert indexes["expires_at_ttl"]["expireAfterSeconds"] == 0


async def test_a_conflicting_index_is_a_store_error_that_says_what_to_do(
    mongodb: MongoTarget, face: str
) -> None:
    database = mongodb.database()
    with raw(mongodb) as client:
        client[database]["sessions"].create_index("expires_at", name="expires_at_ttl")
    store = MongoDBStore(mongodb.url, database=database)
    driven = store if face == "async" else ThreadedStore(sync_face(store))
    try:
        with pytest.raises(StoreError, match="create_indexes=False") as failed:
            await driven.setup()
        assert "during setup" in str(failed.value)
    finally:
        await driven.aclose()
    async with on_face(MongoDBStore(mongodb.url, database=database, create_indexes=False),
                       face) as driven:
        assert await driven.create(new_key(), b"v0", ttl=LONG)


async def test_an_expired_document_still_stored_is_absent_for_every_operation(
    mongodb: MongoTarget, face: str
) -> None:
    """Without the TTL index (as between two passes of MongoDB's TTL
    monitor) the document stays, and no operation sees it."""
    database = mongodb.database()
    store = MongoDBStore(mongodb.url, database=database, create_indexes=False)
    async with on_face(store, face) as driven:
        key = new_key()
        assert await driven.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(driven, key)
        assert await driven.create(new_key(), b"v0", ttl=SHORT)
        expiring = new_key()
        assert await driven.create(expiring, b"v0", ttl=SHORT)
        old = await acquire_lease(driven, expiring, lease_ttl=LONG)
        await asyncio.sleep(SHORT + MARGIN)
        with raw(mongodb) as client:
            assert client[database]["sessions"].find_one({"_id": expiring}) is not None
        assert await driven.read(expiring) is None
        assert await driven.read(expiring, ttl=LONG) is None
        assert await driven.acquire(expiring, lease_ttl=LONG) is None
        assert await driven.inspect(expiring) is None
        scanned = {record.key async for batch in driven.scan(batch_size=1) for record in batch}
        assert scanned == {key}
        assert await driven.discard(expiring) is False
        with raw(mongodb) as client:  # the filter left it alone
            assert client[database]["sessions"].find_one({"_id": expiring}) is not None
        for fenced in (driven.commit(old, b"x", ttl=LONG), driven.release(old),
                       driven.renew(old, lease_ttl=LONG), driven.delete(old)):
            with pytest.raises(Exception, match="not current"):
                await fenced
        assert await driven.create(expiring, b"new", ttl=LONG)  # replaces it
        renewed = await acquire_lease(driven, expiring)
        assert renewed.data == b"new" and renewed.token > old.token
        await driven.release(lease)


async def test_the_ttl_index_deletes_expired_documents(mongodb: MongoTarget, face: str) -> None:
    if not mongodb.emulated:
        pytest.skip("MongoDB's TTL monitor takes up to a minute a pass: not waited for here")
    database = mongodb.database()
    async with on_face(MongoDBStore(mongodb.url, database=database), face) as driven:
        key = new_key()
        assert await driven.create(key, b"v0", ttl=SHORT)
        await asyncio.sleep(SHORT + MARGIN)
        with raw(mongodb) as client:
            # the emulator's gap, by name: gone at once
            assert client[database]["sessions"].find_one({"_id": key}) is None, EXPIRED_VANISH
        assert await driven.purge_expired() == 0


async def test_purge_counts_exactly_what_it_removed(mongodb: MongoTarget, face: str) -> None:
    """On a collection without the TTL index, where nothing else deletes."""
    database = mongodb.database()
    store = MongoDBStore(mongodb.url, database=database, create_indexes=False)
    async with on_face(store, face) as driven:
        expired, live = [new_key() for _ in range(5)], new_key()
        for key in expired:
            assert await driven.create(key, b"v0", ttl=SHORT)
        assert await driven.create(live, b"v0", ttl=LONG)
        await asyncio.sleep(SHORT + MARGIN)
        assert await driven.purge_expired() == len(expired)
        assert await driven.purge_expired() == 0
        assert await driven.read(live) == b"v0"


async def test_purges_racing_each_other_count_every_document_once(
    mongodb: MongoTarget, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired documents of the store's layout, inserted as such, in batches
    of 50 (the emulator deletes a few hundred documents a second): more than
    two batches each."""
    for module in (mongodb_module, sync_mongodb_module):
        monkeypatch.setattr(module, "_PURGE_BATCH", 50)
    database = mongodb.database()
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    with raw(mongodb) as client:
        client[database]["sessions"].insert_many([
            {"_id": new_key(), "data": b"v", "token": 1, "locked_until": None,
             "locked_at": None, "holder": None, "created_at": past, "expires_at": past,
             "absolute_expires_at": None, "waiting": False} for _ in range(300)])
    stores = [on_face(MongoDBStore(mongodb.url, database=database, create_indexes=False),
                      face) for _ in range(4)]
    opened = [await s.__aenter__() for s in stores]
    try:
        counts = await asyncio.gather(*(store.purge_expired() for store in opened))
        assert sum(counts) == 300, counts
    finally:
        for s in stores:
            await s.__aexit__(None, None, None)


async def test_the_document_limit_is_refused_at_commit_and_create(
    mongodb: MongoTarget, face: str
) -> None:
    limit = mongodb_module._MAX_DATA
    assert limit < 16 * 1024 * 1024
    async with on_face(MongoDBStore(mongodb.url, database=mongodb.database()), face) as driven:
        key = new_key()
        assert await driven.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(driven, key)
        with pytest.raises(SessionTooLarge) as refused:
            await driven.commit(lease, b"x" * (limit + 1), ttl=LONG)
        assert refused.value.limit == limit
        with pytest.raises(SessionTooLarge):
            await driven.create(new_key(), b"x" * (limit + 1), ttl=LONG)
        largest = bytes(range(256)) * (limit // 256) + b"x" * (limit % 256)
        await driven.commit(lease, largest, ttl=LONG)  # nothing half-written before: still held
        assert await driven.read(key) == largest


async def test_creates_racing_for_one_key_create_it_once(mongodb: MongoTarget,
                                                         face: str) -> None:
    """Upserts of one _id at once: one inserts; the others find it live, or
    lose the unique index's race (DuplicateKeyError: not created)."""
    async with on_face(MongoDBStore(mongodb.url, database=mongodb.database()), face) as driven:
        for _ in range(5):
            key = new_key()
            created = await asyncio.gather(*(driven.create(key, str(n).encode(), ttl=LONG)
                                             for n in range(8)))
            assert created.count(True) == 1, created
            assert await driven.read(key) == str(created.index(True)).encode()


async def test_a_waiter_in_another_store_finds_the_release_by_polling_on_a_standalone_server(
    mongodb: MongoTarget, face: str
) -> None:
    """Another store instance stands for another process: its release reaches
    this store's waiter by polling, within _POLL_CAP, long before the lease."""
    database = mongodb.database()
    holder_store = MongoDBStore(mongodb.url, database=database)
    async with on_face(holder_store, face) as holder, \
            on_face(MongoDBStore(mongodb.url, database=database), face) as waiter:
        with raw(mongodb) as client:
            if "setName" in client.admin.command("hello"):
                pytest.skip("a replica set: waiters are woken by the change stream")
        key = new_key()
        assert await holder.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(holder, key)
        waiting = asyncio.ensure_future(acquire_waiting(waiter, key, timeout=LONG))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        released = time.monotonic()
        await holder.release(lease)
        got = await waiting
        assert isinstance(got, Lease)
        assert time.monotonic() - released < mongodb_module._POLL_CAP + 0.4
        await waiter.release(got)


async def test_a_waiter_in_another_store_finds_a_discard_at_its_next_re_check(
    mongodb: MongoTarget, face: str
) -> None:
    """discard() wakes its own store's waiters; another store's (another
    process's) find the session gone at their next re-check: within _POLL_CAP
    on a standalone server, within RECHECK_CAP on a replica set, whose
    change stream carries no deletes (WAKE_EVENTS). The emulator runs only
    the first (NO_CHANGE_STREAMS); a replica set in MONGODB_URL the second."""
    database = mongodb.database()
    with raw(mongodb) as client:
        streams = "setName" in client.admin.command("hello")
    bound = listener_module.RECHECK_CAP if streams else mongodb_module._POLL_CAP
    async with on_face(MongoDBStore(mongodb.url, database=database), face) as operator, \
            on_face(MongoDBStore(mongodb.url, database=database), face) as waiter:
        key = new_key()
        assert await operator.create(key, b"v0", ttl=LONG)
        await acquire_lease(operator, key)

        async def wait_for_it() -> Lease | Locked | None:
            attempt = 0
            while isinstance(got := await waiter.acquire(key, lease_ttl=LONG), Locked):
                await waiter.wait(key, got.retry_after, attempt)
                attempt += 1
            return got

        waiting = asyncio.ensure_future(wait_for_it())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        discarded = time.monotonic()
        assert await operator.discard(key)
        assert await asyncio.wait_for(waiting, LONG) is None
        assert time.monotonic() - discarded < bound + 0.4


async def test_scan_reads_each_batch_in_key_order_past_the_last(
    mongodb: MongoTarget, face: str
) -> None:
    """Keyset pagination: batches come in _id order, each past the last key
    of the one before, so a document created behind the scan's position is
    not read and one ahead of it is."""
    database = mongodb.database()
    async with on_face(MongoDBStore(mongodb.url, database=database), face) as driven:
        keys = sorted(new_key() for _ in range(7))
        for key in keys[1:-1]:
            assert await driven.create(key, b"v", ttl=LONG)
        batches = driven.scan(batch_size=2)
        first = [record.key for record in await anext(batches)]
        assert first == keys[1:3]
        assert await driven.create(keys[0], b"behind", ttl=LONG)
        assert await driven.create(keys[-1], b"ahead", ttl=LONG)
        rest = [record.key async for batch in batches for record in batch]
        assert rest == keys[3:]


async def test_the_operators_operations_take_one_command_each(
    mongodb_server: MongoecoServer, face: str
) -> None:
    """Counted on the wire: discard one delete, inspect one find, scan one
    find per batch, purge one find and one delete per batch. Batches beyond
    the server's default first reply of 101 documents take one round trip
    only if each find says its batch size: the emulator answers whole finds
    at once (FIRST_BATCH_WHOLE), so the commands sent are checked for it."""
    counter = CommandCounter(mongodb_server.port)
    finds = FindCommands()
    await counter.start()
    try:
        store = MongoDBStore(counter.url, database=f"operators_{secrets.token_hex(4)}",
                             create_indexes=False, client_options={"event_listeners": [finds]})
        async with on_face(store, face) as driven:
            keys = [new_key() for _ in range(150)]
            for key in keys:
                assert await driven.create(key, b"v", ttl=LONG)
            counter.take()
            assert await driven.inspect(keys[0]) is not None
            assert counter.take() == ["find"]
            assert [len(b) async for b in driven.scan()] == [150]
            assert counter.take() == ["find"]
            assert [len(b) async for b in driven.scan(batch_size=50)] == [50, 50, 50]
            assert counter.take() == ["find"] * 4  # the last one finds nothing
            assert [len(b) async for b in driven.scan(batch_size=120)] == [120, 30]
            assert counter.take() == ["find"] * 2
            assert await driven.discard(keys[0])
            assert counter.take() == ["delete"]
            for _ in range(150):  # expired documents stay: no TTL index
                assert await driven.create(new_key(), b"v", ttl=SHORT)
            await asyncio.sleep(SHORT + MARGIN)
            counter.take()
            assert await driven.purge_expired() == 150
            assert counter.take() == ["find", "delete"]
        scans = [c for c in finds.commands if "sort" in c and c.get("limit") != 1]
        assert [c["limit"] for c in scans] == [500, 50, 50, 50, 50, 120, 120]
        purges = [c for c in finds.commands if "sort" not in c and c.get("limit") != 1]
        assert [c["limit"] for c in purges] == [500]
        for command in scans + purges:  # pymongo sends limit + 1: the server closes the cursor
            assert command.get("batchSize", 0) >= command["limit"], FIRST_BATCH_WHOLE
    finally:
        await counter.aclose()


class FindCommands(pymongo.monitoring.CommandListener):
    """The find commands a client sends, as sent."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.commands.append(dict(event.command))

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        pass


async def test_scan_refuses_an_empty_batch_size(mongodb: MongoTarget, face: str) -> None:
    """MongoDB reads limit(0) as no limit: a batch of every document."""
    async with on_face(MongoDBStore(mongodb.url, database=mongodb.database()), face) as driven:
        with pytest.raises(ConfigurationError, match="batch_size"):
            await anext(driven.scan(batch_size=0))


async def test_a_waiter_in_another_store_is_woken_by_the_change_stream(
    mongodb: MongoTarget, face: str
) -> None:
    """On a replica set: woken at the release, not at its next re-check (it
    waits as if it had waited ten times already, up to _RECHECK_CAP)."""
    database = mongodb.database()
    with raw(mongodb) as client:
        if "setName" not in client.admin.command("hello"):
            pytest.skip(NO_CHANGE_STREAMS if mongodb.emulated else
                        "a standalone server has no change streams")
    async with on_face(MongoDBStore(mongodb.url, database=database), face) as holder, \
            on_face(MongoDBStore(mongodb.url, database=database), face) as waiter:
        key = new_key()
        assert await holder.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(holder, key)
        assert isinstance(await waiter.acquire(key, lease_ttl=LONG), Locked)
        await waiter.wait(key, 0.5, 0)  # starts the change stream
        await asyncio.sleep(1.0)
        waiting = asyncio.ensure_future(waiter.wait(key, LONG, 12))
        await asyncio.sleep(0.1)
        released = time.monotonic()
        await holder.release(lease)
        await waiting
        assert time.monotonic() - released < 0.3


def test_bad_arguments_are_refused_at_construction() -> None:
    for url in ("http://h", "h:27017", ""):
        with pytest.raises(ConfigurationError):
            MongoDBStore(url)
    with pytest.raises(ConfigurationError):
        MongoDBStore("mongodb://h", database="a.b")
    with pytest.raises(ConfigurationError):
        MongoDBStore("mongodb://h", collection="$bad")
    with pytest.raises(ConfigurationError):
        MongoDBStore("mongodb://h", timeout=0)
    assert "secret" not in repr(MongoDBStore("mongodb://user:secret@h1:1,h2:2/db?tls=true"))


# pymongo (4.20) leaks the socket of a connect attempt its async monitor is
# cancelled in (AsyncMongoClient.close() against a server that is down:
# pool_shared._async_create_connection closes it only on OSError): collected
# here, so that its ResourceWarning is this test's and ignored.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_server_that_is_down_is_unavailable_and_nothing_was_applied(
    face: str,
) -> None:
    port = free_port()  # nothing listens there
    store = MongoDBStore(f"mongodb://127.0.0.1:{port}/?directConnection=true", timeout=0.5,
                         create_indexes=False)
    async with on_face(store, face) as driven:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as failed:
            await driven.acquire(new_key(), lease_ttl=LONG)
        assert time.monotonic() - started < 3
        assert f"127.0.0.1:{port}" in str(failed.value)
        assert "during acquire" in str(failed.value)
        assert failed.value.maybe_applied is False
    gc.collect()


async def test_a_stalled_server_is_unavailable_within_the_timeout(
    mongodb_server_factory: Callable[..., MongoecoServer], face: str
) -> None:
    server = mongodb_server_factory()
    store = MongoDBStore(server.url, timeout=0.5)
    async with on_face(store, face) as driven:
        key = new_key()
        assert await driven.create(key, b"v0", ttl=LONG)
        server.stall()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as failed:
                await driven.read(key)
            assert time.monotonic() - started < 3
            assert f"127.0.0.1:{server.port}" in str(failed.value)
        finally:
            server.resume()
        assert await driven.read(key) == b"v0"


async def test_tokens_come_from_the_server_clock(mongodb: MongoTarget, face: str) -> None:
    async with on_face(MongoDBStore(mongodb.url, database=mongodb.database()), face) as driven:
        key = new_key()
        before = datetime.datetime.now(datetime.UTC).timestamp()
        assert await driven.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(driven, key)
        millis = lease.token >> 20
        # the server's clock here is this machine's (give skew of a real one room)
        assert abs(millis / 1000 - before) < 60


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.faces("async")
async def test_a_store_whose_setup_fails_in_async_with_is_closed(
    mongodb: MongoTarget, face: str
) -> None:
    database = mongodb.database()
    with raw(mongodb) as client:
        client[database]["sessions"].create_index("expires_at", name="expires_at_ttl")
    store = MongoDBStore(mongodb.url, database=database)
    try:
        with pytest.raises(StoreError, match="during setup"):
            async with store:
                pass
        with pytest.raises(StoreError, match="is closed"):
            await store.read(new_key())
    finally:
        await store.aclose()
        gc.collect()


async def test_a_change_stream_the_server_refuses_leaves_waiters_polling(
    mongodb: MongoTarget, face: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher's own failure path, run for real: told the deployment has
    change streams (as a replica set's hello would), it opens one; the
    emulator refuses ``$changeStream`` (NO_CHANGE_STREAMS), the watcher logs
    it and retries with backoff, waiters find the release by polling, and
    close() ends the watcher."""
    if not mongodb.emulated:
        pytest.skip("needs a server that refuses change streams")
    database = mongodb.database()
    store = MongoDBStore(mongodb.url, database=database)
    holder_store = MongoDBStore(mongodb.url, database=database)
    async with on_face(holder_store, face) as holder, on_face(store, face) as waiter:
        watcher = (store if face == "async" else sync_face(store))._watcher
        watcher._streams = True
        key = new_key()
        assert await holder.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(holder, key)
        waiting = asyncio.ensure_future(acquire_waiting(waiter, key, timeout=LONG))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await holder.release(lease)
        got = await waiting
        assert isinstance(got, Lease)
        await waiter.release(got)
        assert watcher._run is not None  # still retrying
    assert watcher._run is None  # ended by close()
    assert any("change stream" in record.getMessage() and "$changeStream" in
               record.getMessage() for record in caplog.records), caplog.records
