"""DynamoDBStore beyond the contract, on both faces against DynamoDB Local:
what a contended acquire costs on the wire, the item limit, the table's
set-up, a commit capped by the hard deadline it did not know, and how driver
errors are translated."""

from __future__ import annotations

import asyncio
import secrets
import time

import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from sessionware import LeaseLost, SessionTooLarge, StoreError, StoreUnavailable
from sessionware._async.stores.dynamodb import ERRORS, MAX_DATA
from sessionware.stores import DynamoDBStore, Lease, Locked, Store
from tests.support.faces import ThreadedStore, on_face, sync_face
from tests.support.processes import free_port
from tests.support.servers.dynamodb import DynamoDBServer, RequestCounter, store_options
from tests.support.store_contract import LONG, MARGIN, SHORT, new_key


def fresh_table() -> str:
    return f"sessions_{secrets.token_hex(6)}"


async def test_a_contended_acquire_costs_one_request(dynamodb_server: DynamoDBServer,
                                                     face: str) -> None:
    """The refused UpdateItem answers the holder's deadline itself
    (ReturnValuesOnConditionCheckFailure=ALL_OLD): no second read."""
    counter = RequestCounter(dynamodb_server.port)
    await counter.start()
    try:
        store = DynamoDBStore(fresh_table(), **store_options(counter.endpoint))
        async with on_face(store, face) as faced:
            key = new_key()
            assert await faced.create(key, b"v0", ttl=LONG)
            holder = await faced.acquire(key, lease_ttl=5.0)
            assert isinstance(holder, Lease)
            counter.take()
            locked = await faced.acquire(key, lease_ttl=5.0)
            assert isinstance(locked, Locked) and 4.0 < locked.retry_after <= 5.0
            assert counter.take() == ["UpdateItem"]
            assert await faced.acquire(new_key(), lease_ttl=5.0) is None  # absent: one too
            assert counter.take() == ["UpdateItem"]
    finally:
        await counter.aclose()


async def test_the_operators_operations_cost_one_request_each_and_one_per_page(
    dynamodb_server: DynamoDBServer, face: str
) -> None:
    """discard is one DeleteItem, inspect one GetItem (locked or not), and
    scan one Scan per page of batch_size items (plus, at most, one that finds
    the table ended after a full page)."""
    counter = RequestCounter(dynamodb_server.port)
    await counter.start()
    try:
        store = DynamoDBStore(fresh_table(), **store_options(counter.endpoint))
        async with on_face(store, face) as faced:
            keys = [new_key() for _ in range(5)]
            for key in keys:
                assert await faced.create(key, b"v0", ttl=LONG)
            assert isinstance(await faced.acquire(keys[0], lease_ttl=LONG), Lease)
            counter.take()
            record = await faced.inspect(keys[0])
            assert record is not None and record.locked_until is not None
            assert counter.take() == ["GetItem"]
            assert await faced.discard(keys[0]) is True
            assert counter.take() == ["DeleteItem"]
            assert await faced.discard(keys[0]) is False
            assert counter.take() == ["DeleteItem"]
            batches = [batch async for batch in faced.scan(batch_size=2)]
            assert sorted(r.key for batch in batches for r in batch) == sorted(keys[1:])
            requests = counter.take()
            assert set(requests) == {"Scan"}
            assert len(batches) <= len(requests) <= len(batches) + 1
    finally:
        await counter.aclose()


async def test_a_session_over_the_item_limit_fails_whole_and_one_at_it_fits(
    dynamodb_endpoint: str, face: str
) -> None:
    """DynamoDB's 400 KB counts names and every attribute: the store's limit
    leaves room for them, and a session of exactly that size is stored."""
    store = DynamoDBStore(fresh_table(), **store_options(dynamodb_endpoint))
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=LONG)
        lease = await faced.acquire(key, lease_ttl=LONG)
        assert isinstance(lease, Lease)
        with pytest.raises(SessionTooLarge) as raised:
            await faced.commit(lease, b"x" * (MAX_DATA + 1), ttl=LONG)
        assert raised.value.limit == MAX_DATA
        assert str(MAX_DATA) in str(raised.value)
        assert await faced.read(key) == b"v0"
        await faced.commit(lease, b"x" * MAX_DATA, ttl=LONG)
        assert await faced.read(key) == b"x" * MAX_DATA
        with pytest.raises(SessionTooLarge):
            await faced.create(new_key(), b"x" * (MAX_DATA + 1), ttl=LONG)


async def test_setup_creates_an_on_demand_table_with_ttl_and_is_idempotent(
    dynamodb_endpoint: str, face: str
) -> None:
    table = fresh_table()
    stores = [DynamoDBStore(table, **store_options(dynamodb_endpoint)) for _ in range(3)]
    faced = [on_face(store, face) for store in stores]
    # several processes setting up at once: modelled by three stores
    opened = await asyncio.gather(*(f.__aenter__() for f in faced))
    try:
        await opened[0].setup()
    finally:
        for f in faced:
            await f.__aexit__(None, None, None)
    client = botocore.session.get_session().create_client(
        "dynamodb", **store_options(dynamodb_endpoint))
    try:
        described = client.describe_table(TableName=table)["Table"]
        ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    finally:
        client.close()
    assert described["TableStatus"] == "ACTIVE"
    assert described["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}


async def test_setup_without_create_table_names_the_missing_table(
    dynamodb_endpoint: str, face: str
) -> None:
    store = DynamoDBStore(fresh_table(), create_table=False, **store_options(dynamodb_endpoint))
    faced = store if face == "async" else ThreadedStore(sync_face(store))
    try:
        with pytest.raises(StoreError, match="no table"):
            await faced.setup()
    finally:
        await faced.aclose()


async def test_a_commit_is_capped_by_a_hard_deadline_it_did_not_know(
    dynamodb_endpoint: str, face: str
) -> None:
    """A lease this store instance did not grant (another instance's, as
    after a restart of the lease keeper's process) still commits within the
    hard deadline: the refusal answers it, and the commit is sent again capped."""
    table = fresh_table()
    granting = DynamoDBStore(table, **store_options(dynamodb_endpoint))
    committing = DynamoDBStore(table, **store_options(dynamodb_endpoint))
    async with on_face(granting, face) as first, on_face(committing, face) as second:
        key = new_key()
        assert await first.create(key, b"v0", ttl=LONG, absolute_ttl=SHORT + 0.5)
        lease = await first.acquire(key, lease_ttl=LONG)
        assert isinstance(lease, Lease)
        await second.commit(lease, b"v1", ttl=LONG)
        assert await second.read(key) == b"v1"
        await asyncio.sleep(SHORT + 0.5 + MARGIN)
        assert await second.read(key) is None
        with pytest.raises(LeaseLost):
            await second.commit(lease, b"v2", ttl=LONG)


async def test_nothing_listening_is_unavailable_and_not_applied(face: str) -> None:
    store = DynamoDBStore(**store_options(f"http://127.0.0.1:{free_port()}"))
    faced = store if face == "async" else ThreadedStore(sync_face(store))
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await faced.setup()
    finally:
        await faced.aclose()
    assert raised.value.maybe_applied is False
    assert "127.0.0.1" in str(raised.value)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "UpdateItem")


@pytest.mark.parametrize(("error", "kind", "maybe_applied"), [
    (_client_error("ProvisionedThroughputExceededException", 400), StoreUnavailable, False),
    (_client_error("ThrottlingException", 400), StoreUnavailable, False),
    (_client_error("RequestLimitExceeded", 400), StoreUnavailable, False),
    (_client_error("InternalServerError", 500), StoreUnavailable, True),
    (_client_error("ServiceUnavailable", 503), StoreUnavailable, True),
    (EndpointConnectionError(endpoint_url="http://e"), StoreUnavailable, False),
    (ReadTimeoutError(endpoint_url="http://e"), StoreUnavailable, True),
    (_client_error("AccessDeniedException", 400), StoreError, None),
    (_client_error("ResourceNotFoundException", 400), StoreError, None),
    (NoCredentialsError(), StoreError, None),
    (NoRegionError(), StoreError, None),
])
def test_driver_errors_are_translated_in_one_place(
    error: Exception, kind: type[StoreError], maybe_applied: bool | None
) -> None:
    """Throttling cannot be had from DynamoDB Local: the translation is
    checked on the driver's own exception objects."""
    translated = ERRORS.translate("commit", "http://e/t", error)
    assert type(translated) is kind
    assert "http://e/t" in str(translated) and "commit" in str(translated)
    if maybe_applied is not None:
        assert isinstance(translated, StoreUnavailable)
        assert translated.maybe_applied is maybe_applied


async def test_a_waiter_in_another_process_polls_at_a_capped_rate(
    dynamodb_server: DynamoDBServer, face: str
) -> None:
    """No notification reaches another process: its waiter re-checks with
    jittered backoff, 25-50 ms doubling up to 250-500 ms, so in 2 s of
    waiting it sends 6 to 10 acquires, and it finds the release within the
    cap."""
    counter = RequestCounter(dynamodb_server.port)
    await counter.start()
    try:
        table = fresh_table()
        holding = DynamoDBStore(table, **store_options(dynamodb_server.endpoint))
        waiting = DynamoDBStore(table, **store_options(counter.endpoint))
        async with on_face(holding, face) as holder, on_face(waiting, face) as waiter:
            key = new_key()
            assert await holder.create(key, b"v0", ttl=LONG)
            lease = await holder.acquire(key, lease_ttl=LONG)
            assert isinstance(lease, Lease)
            counter.take()
            polled = asyncio.create_task(poll_until_acquired(waiter, key))
            await asyncio.sleep(2.0)
            polls = len(counter.take())
            released = time.monotonic()
            await holder.commit(lease, b"v1", ttl=LONG)
            got, took = await asyncio.wait_for(polled, 5.0)
        assert 5 <= polls <= 11, polls
        assert got.data == b"v1"
        assert took - released < 0.5 + 0.3  # the cap, and a request's time
    finally:
        await counter.aclose()


async def poll_until_acquired(store: Store, key: str) -> tuple[Lease, float]:
    """As the core does: acquire, else wait (here never woken locally)."""
    for attempt in range(1000):
        got = await store.acquire(key, lease_ttl=LONG)
        if isinstance(got, Lease):
            return got, time.monotonic()
        assert isinstance(got, Locked)
        await store.wait(key, got.retry_after, attempt)
    raise AssertionError("never acquired")


async def test_a_waiter_in_the_same_process_is_woken_at_the_release(
    dynamodb_endpoint: str, face: str
) -> None:
    """Waiting at the cap (250-500 ms), it is woken at once by a release of
    the same store instead."""
    store = DynamoDBStore(fresh_table(), **store_options(dynamodb_endpoint))
    async with on_face(store, face) as faced:
        key = new_key()
        assert await faced.create(key, b"v0", ttl=LONG)
        lease = await faced.acquire(key, lease_ttl=LONG)
        assert isinstance(lease, Lease)
        for _ in range(5):
            waiting = asyncio.create_task(faced.wait(key, LONG, 20))
            await asyncio.sleep(0.05)
            released = time.monotonic()
            await faced.release(lease)
            await asyncio.wait_for(waiting, 5.0)
            assert time.monotonic() - released < 0.2
            lease = await faced.acquire(key, lease_ttl=LONG)
            assert isinstance(lease, Lease)
