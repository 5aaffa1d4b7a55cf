"""RavenDBStore beyond the shared suites, on both faces, on a real RavenDB
server (tests/support/servers/ravendb.py): the documents as stored, the
expiration sweep that setup() turns on, expired documents absent while still
stored, the size limit, the requests of the operators' operations, a blocking
client that never blocks the event loop, waiters woken through the Changes API,
and errors."""

from __future__ import annotations

import asyncio
import base64
import datetime
import time
from collections.abc import Callable
from typing import Any

import pytest
from ravendb import DocumentStore
from ravendb.documents.commands.crud import GetDocumentsCommand

from sessionware import (
    ConfigurationError,
    LeaseLost,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
)
from sessionware._async.stores.ravendb import MAX_DATA
from sessionware.stores import Lease, Locked, RavenDBStore
from tests.support.faces import on_face, sync_face
from tests.support.processes import free_port
from tests.support.servers.ravendb import (
    DATABASE,
    HTTPRequestCounter,
    RavenServer,
    RavenTarget,
    own_version,
)
from tests.support.store_contract import LONG, acquire_lease, new_key

SHORT = 0.2
MARGIN = 0.3


def raw_document(url: str, database: str, document_id: str) -> dict[str, Any] | None:
    """The document as stored, read by the client itself, expired or not."""
    store = DocumentStore([url], database)
    store.initialize()
    try:
        command = GetDocumentsCommand.from_single_id(document_id)
        store.get_request_executor().execute_command(command)
        found = None if command.result is None else command.result.results
        return found[0] if found else None
    finally:
        store.close()


async def test_the_document_as_stored(ravendb: RavenTarget, face: str) -> None:
    """One document per session in the store's collection: data in base64, a
    token that grows by one at each acquire, @expires for the sweep."""
    collection = ravendb.collection()
    store = RavenDBStore(ravendb.url, ravendb.unswept, collection=collection, sweep_every=None)
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=LONG, absolute_ttl=2 * LONG)
        created = raw_document(ravendb.url, ravendb.unswept, f"{collection}/{key}")
        lease = await acquire_lease(faced, key)
        locked = raw_document(ravendb.url, ravendb.unswept, f"{collection}/{key}")
    assert created is not None and locked is not None
    assert base64.b64decode(created["data"]) == b"v0"
    assert locked["token"] == created["token"] + 1 == lease.token
    assert created["locked_until"] is None and locked["locked_until"] > time.time() + LONG / 2
    assert created["absolute_expires_at"] - created["created_at"] == pytest.approx(2 * LONG)
    assert created["@metadata"]["@collection"] == collection
    expires = datetime.datetime.fromisoformat(created["@metadata"]["@expires"])
    assert expires.timestamp() == pytest.approx(created["expires_at"], abs=0.002)


async def test_the_sweep_set_up_by_setup_removes_an_expired_document(
    ravendb: RavenTarget, face: str
) -> None:
    collection = ravendb.collection()
    store = RavenDBStore(ravendb.url, ravendb.swept, collection=collection, sweep_every=1)
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=SHORT)
        deadline = time.monotonic() + 10  # a sweep a second, on a busy machine
        while raw_document(ravendb.url, ravendb.swept, f"{collection}/{key}") is not None:
            assert time.monotonic() < deadline, "the sweep did not remove the document"
            await asyncio.sleep(0.1)


async def test_an_expired_document_is_absent_while_still_stored(
    ravendb: RavenTarget, face: str
) -> None:
    """Without a sweep the document stays: every operation checks the
    deadline itself, and a create replaces it with a new token."""
    collection = ravendb.collection()
    store = RavenDBStore(ravendb.url, ravendb.unswept, collection=collection, sweep_every=None)
    async with on_face(store, face) as faced:
        key, held = new_key(), new_key()
        ttl = 1.0  # time enough to take the lease first, on a loaded machine
        assert await faced.create(key, b"v0", ttl=ttl)
        assert await faced.create(held, b"v0", ttl=ttl)
        lease = await acquire_lease(faced, held)
        await asyncio.sleep(ttl + MARGIN)
        stored = raw_document(ravendb.url, ravendb.unswept, f"{collection}/{key}")
        assert stored is not None
        assert await faced.read(key) is None
        assert await faced.acquire(key, lease_ttl=LONG) is None
        assert await faced.inspect(key) is None
        assert await faced.discard(key) is False
        with pytest.raises(LeaseLost):  # expired with its lease
            await faced.commit(lease, b"late", ttl=LONG)
        assert await faced.create(key, b"new", ttl=LONG)
        again = await acquire_lease(faced, key)
        assert again.data == b"new" and again.token != stored["token"] + 1  # random anew
        assert await faced.purge_expired() == 1  # the held one; the other was revived


async def test_a_session_over_the_limit_fails_whole_and_one_at_it_fits(
    ravendb: RavenTarget, face: str
) -> None:
    store = RavenDBStore(ravendb.url, ravendb.swept, collection=ravendb.collection())
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(faced, key)
        with pytest.raises(SessionTooLarge) as raised:
            await faced.commit(lease, b"x" * (MAX_DATA + 1), ttl=LONG)
        assert raised.value.limit == MAX_DATA
        assert await faced.read(key) == b"v0"
        await faced.commit(lease, b"x" * MAX_DATA, ttl=LONG)
        assert await faced.read(key) == b"x" * MAX_DATA
        with pytest.raises(SessionTooLarge):
            await faced.create(new_key(), b"x" * (MAX_DATA + 1), ttl=LONG)


async def test_each_operation_is_one_request_on_the_wire(ravendb: RavenTarget, face: str) -> None:
    """A refused acquire is one PATCH (the holder's deadline comes with it);
    discard one PATCH, inspect one GET, scan one GET per page (plus, at most,
    one that finds the collection ended after a full page)."""
    counter = HTTPRequestCounter(int(ravendb.url.rpartition(":")[2]))
    await counter.start()
    try:
        store = RavenDBStore(counter.endpoint, ravendb.swept, collection=ravendb.collection())
        async with on_face(store, face) as faced:
            keys = [new_key() for _ in range(5)]
            for key in keys:
                assert await faced.create(key, b"v0", ttl=LONG)
            await acquire_lease(faced, keys[0])
            counter.take()
            refused = await faced.acquire(keys[0], lease_ttl=LONG)
            assert isinstance(refused, Locked) and refused.retry_after > LONG / 2
            assert counter.take() == ["PATCH docs"]
            record = await faced.inspect(keys[0])
            assert record is not None and record.locked_until is not None
            assert counter.take() == ["GET docs"]
            assert await faced.discard(keys[0]) is True
            assert await faced.discard(keys[0]) is False
            assert counter.take() == ["PATCH docs", "PATCH docs"]
            batches = [batch async for batch in faced.scan(batch_size=2)]
            assert sorted(r.key for batch in batches for r in batch) == sorted(keys[1:])
            requests = counter.take()
            assert set(requests) == {"GET docs"}
            assert len(batches) <= len(requests) <= len(batches) + 1
    finally:
        await counter.aclose()


async def test_a_missing_database_is_a_store_error_that_says_so(
    ravendb: RavenTarget, face: str
) -> None:
    store = RavenDBStore(ravendb.url, "no_such_database")
    with pytest.raises(StoreError, match="DatabaseDoesNotExist") as raised:
        async with on_face(store, face):
            pass
    assert not isinstance(raised.value, StoreUnavailable)


async def test_no_server_is_unavailable_and_nothing_applied(face: str) -> None:
    store = RavenDBStore(f"http://127.0.0.1:{free_port()}", DATABASE, timeout=2.0,
                         sweep_every=None)
    async with on_face(store, face) as faced:
        with pytest.raises(StoreUnavailable) as raised:
            await faced.create(new_key(), b"v0", ttl=LONG)
    assert raised.value.maybe_applied is False


async def test_the_async_face_never_blocks_the_event_loop(
    ravendb_server_factory: Callable[[], RavenServer],
) -> None:
    """The client blocks: on the async face it runs on the store's threads, so
    the loop ticks on while a request waits on a stalled server."""
    server = ravendb_server_factory()
    async with RavenDBStore(server.url, DATABASE, timeout=2.0) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        server.stall()
        try:
            pending = asyncio.ensure_future(store.acquire(key, lease_ttl=LONG))
            ticks = 0
            started = time.monotonic()
            while time.monotonic() - started < 0.5:
                await asyncio.sleep(0.01)
                ticks += 1
            assert not pending.done()
            assert ticks >= 10  # 50 of 10 ms in 0.5 s, with room for a busy machine
        finally:
            server.resume()
        assert isinstance(await pending, Lease | Locked)


async def test_a_waiter_in_another_store_is_woken_by_the_changes_api(
    ravendb: RavenTarget, face: str
) -> None:
    """Two stores, as two processes would have: the waiter's is woken at the
    holder's release, not at its next re-check (it waits as if it had waited
    twelve times already: up to a second)."""
    collection = ravendb.collection()
    waiting_store = RavenDBStore(ravendb.url, ravendb.swept, collection=collection)
    async with on_face(RavenDBStore(ravendb.url, ravendb.swept, collection=collection),
                       face) as holder, on_face(waiting_store, face) as waiter:
        key = new_key()
        assert await holder.create(key, b"v0", ttl=LONG)
        lease = await acquire_lease(holder, key)
        assert isinstance(await waiter.acquire(key, lease_ttl=LONG), Locked)
        await waiter.wait(key, 0.01, 0)  # starts the listener
        watcher = (waiting_store if face == "async" else sync_face(waiting_store))._watcher
        deadline = time.monotonic() + 10
        while not watcher._listening:  # subscribed: the server confirmed
            assert time.monotonic() < deadline, "the Changes API subscription failed"
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(waiter.wait(key, LONG, 12))
        await asyncio.sleep(0.1)
        released = time.monotonic()
        await holder.release(lease)
        await waiting
        assert time.monotonic() - released < 0.3


async def test_without_watch_waiters_poll(ravendb: RavenTarget, face: str) -> None:
    store = RavenDBStore(ravendb.url, ravendb.swept, collection=ravendb.collection(),
                         watch=False)
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=LONG)
        started = time.monotonic()
        await faced.wait(key, LONG, 12)  # polls: at most 250 ms
        assert time.monotonic() - started < 1.0
        watcher = (store if face == "async" else sync_face(store))._watcher
        assert watcher._run is None  # never started


def test_bad_arguments_are_refused_at_construction() -> None:
    for url in ("ravendb://h:8080", "h:8080", ""):
        with pytest.raises(ConfigurationError, match="url"):
            RavenDBStore(url, "db")
    for database in ("", "a/b"):
        with pytest.raises(ConfigurationError, match="database"):
            RavenDBStore("http://h:8080", database)
    with pytest.raises(ConfigurationError, match="collection"):
        RavenDBStore("http://h:8080", "db", collection="1st")
    with pytest.raises(ConfigurationError, match="sweep_every"):
        RavenDBStore("http://h:8080", "db", sweep_every=0)
    with pytest.raises(ConfigurationError):
        RavenDBStore("http://h:8080", "db", timeout=0)


async def test_a_4_1_server_s_wrapped_errors_still_carry_the_refusals(
    ravendb: RavenTarget, face: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the client's own version (as the library leaves it), a 4.1 server
    answers every error as ClientVersionMismatchException: its message still
    carries the scripts' refusal, so a stale lease is LeaseLost and an absent
    session's discard False; anything else is a StoreError that says so."""
    if ravendb.modern:
        pytest.skip("RAVENDB_URL's server: the client speaks its own version anyway")
    from ravendb.http.request_executor import RequestExecutor

    monkeypatch.setattr(RequestExecutor, "CLIENT_VERSION", own_version())
    store = RavenDBStore(ravendb.url, ravendb.unswept, collection=ravendb.collection(),
                         sweep_every=None)
    async with on_face(store, face) as faced:
        key, expiring = new_key(), new_key()
        assert await faced.create(key, b"v0", ttl=LONG)
        assert await faced.create(expiring, b"v0", ttl=SHORT)
        lease = await acquire_lease(faced, key)
        stale = Lease(key, lease.token + 1, b"")
        with pytest.raises(LeaseLost):
            await faced.commit(stale, b"stale", ttl=LONG)
        await asyncio.sleep(SHORT + MARGIN)
        assert await faced.discard(expiring) is False  # expired: the script refuses
    with pytest.raises(StoreError, match="ClientVersionMismatch"):
        async with on_face(RavenDBStore(ravendb.url, "no_such_database"), face):
            pass
