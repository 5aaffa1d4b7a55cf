"""AzureTableStore beyond the contract, on Azurite, on both faces where the
store is driven: large data through a blob and nothing left behind, orphans
swept, two processes' ETag caches racing, what a missing table or an
unreachable or stalled service answers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableClient, UpdateMode
from azure.storage.blob import ContainerClient, generate_account_sas

from sessionware import LeaseLost, StoreError, StoreUnavailable
from sessionware._async.stores.azure_blobs import MAX_INLINE
from sessionware._async.stores.azure_entities import ROW
from sessionware.stores import AzureTableStore, Lease, Store
from tests.support.faces import on_face
from tests.support.servers.azurite import ACCOUNT, ACCOUNT_KEY, HOST, Azurite
from tests.support.store_contract import LONG, SHORT, acquire_lease, acquire_waiting, new_key

MIB = 1024 * 1024


class Account:
    """The test's own table and container, and blocking clients to look at them."""

    def __init__(self, connection_string: str) -> None:
        suffix = secrets.token_hex(6)
        self.connection_string = connection_string
        self.table, self.container = f"sessions{suffix}", f"sessions-{suffix}"
        self.entities = TableClient.from_connection_string(connection_string, self.table)
        self.blobs = ContainerClient.from_connection_string(connection_string, self.container)

    def store(self, **options: object) -> AzureTableStore:
        return AzureTableStore(self.connection_string, table=self.table,
                               container=self.container, purge_interval=3600,
                               **options)  # type: ignore[arg-type]

    def blob_names(self) -> list[str]:
        return sorted(blob.name for blob in self.blobs.list_blobs())

    def blob_property(self, key: str) -> str:
        return str(self.entities.get_entity(key, ROW)["Blob"])

    def close(self) -> None:
        self.entities.close()
        self.blobs.close()


@pytest.fixture
def account(azure_connection_string: str) -> Iterator[Account]:
    made = Account(azure_connection_string)
    try:
        yield made
    finally:
        made.close()


async def test_a_1_mib_session_round_trips_through_one_blob_and_a_shrink_leaves_none(
    account: Account, face: str
) -> None:
    """Exactly one blob while the data is large (a new one at each commit,
    the one before deleted), none once it is inline again."""
    big, bigger = secrets.token_bytes(MIB), secrets.token_bytes(MIB + 1)
    async with on_face(account.store(), face) as store:
        key = new_key()
        assert await store.create(key, b"small", ttl=LONG)
        await store.commit(await acquire_lease(store, key), big, ttl=LONG)
        [first] = account.blob_names()
        lease = await acquire_lease(store, key)
        assert lease.data == big
        await store.commit(lease, bigger, ttl=LONG)
        [second] = account.blob_names()
        assert second != first and account.blob_property(key) == second
        assert await store.read(key) == bigger
        await store.commit(await acquire_lease(store, key), b"small again", ttl=LONG)
        assert account.blob_names() == []
        assert account.blob_property(key) == ""
        assert await store.read(key) == b"small again"


async def test_mid_sized_data_stays_inline_in_pieces(account: Account, face: str) -> None:
    data = secrets.token_bytes(MAX_INLINE)
    async with on_face(account.store(), face) as store:
        key = new_key()
        assert await store.create(key, data, ttl=LONG)
        assert (await acquire_lease(store, key)).data == data
        assert account.blob_names() == []
        entity = account.entities.get_entity(key, ROW)
        assert len([name for name in entity if name.startswith("D")]) == 11


async def test_a_refused_commit_of_large_data_leaves_no_blob(account: Account,
                                                             face: str) -> None:
    async with on_face(account.store(), face) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        stale = await acquire_lease(store, key, lease_ttl=SHORT)
        await asyncio.sleep(SHORT + 0.3)
        fresh = await acquire_lease(store, key)
        with pytest.raises(LeaseLost):
            await store.commit(stale, secrets.token_bytes(MIB), ttl=LONG)
        assert account.blob_names() == []
        await store.commit(fresh, b"fresh", ttl=LONG)
        assert await store.read(key) == b"fresh"


async def test_delete_and_a_refused_create_leave_no_blob(account: Account, face: str) -> None:
    async with on_face(account.store(), face) as store:
        key = new_key()
        assert await store.create(key, secrets.token_bytes(MIB), ttl=LONG)
        [blob] = account.blob_names()
        assert not await store.create(key, secrets.token_bytes(MIB), ttl=LONG)
        assert account.blob_names() == [blob]
        await store.delete(await acquire_lease(store, key))
        assert account.blob_names() == []


async def test_purge_removes_expired_entities_their_blobs_and_orphans_only(
    account: Account, face: str
) -> None:
    """The purging store sweeps orphans at once (``orphan_age=0``); the one
    that writes keeps the default, so that its own background purge never
    takes a blob on its way to the entity for an orphan."""
    async with on_face(account.store(), face) as store, \
            on_face(account.store(orphan_age=0.0), face) as purger:
        expired, live = new_key(), new_key()
        assert await store.create(expired, secrets.token_bytes(MIB), ttl=SHORT)
        assert await store.create(live, secrets.token_bytes(MIB), ttl=LONG)
        [live_blob] = [name for name in account.blob_names() if name.startswith(live)]
        account.blobs.upload_blob(f"{new_key()}/orphan", b"left by a crashed commit")
        await asyncio.sleep(SHORT + 0.3)
        assert await purger.purge_expired() == 1
        assert account.blob_names() == [live_blob]
        assert await store.read(expired) is None
        assert await store.read(live) is not None


async def test_a_young_unnamed_blob_is_left_to_its_commit(account: Account, face: str) -> None:
    """A blob is uploaded before the entity names it: the purge leaves blobs
    younger than ``orphan_age`` alone, named or not."""
    async with on_face(account.store(), face) as store:
        account.blobs.upload_blob(f"{new_key()}/in-flight", b"a commit on its way")
        assert await store.purge_expired() == 0
        assert len(account.blob_names()) == 1


async def test_two_processes_caches_racing_lose_no_increment(account: Account,
                                                              face: str) -> None:
    """Two store instances (as two processes: each reuses the ETags of its
    own changes, which the other's make stale) increment one session."""
    async with on_face(account.store(), face) as one, on_face(account.store(), face) as two:
        key, rounds = new_key(), 15
        assert await one.create(key, b"0", ttl=LONG)
        inside = 0

        async def increment(store: Store) -> None:
            nonlocal inside
            for _ in range(rounds):
                lease = await acquire_waiting(store, key, timeout=LONG)
                inside += 1
                assert inside == 1, "two holders at once"
                await asyncio.sleep(0)
                inside -= 1
                await store.commit(lease, str(int(lease.data) + 1).encode(), ttl=LONG)

        await asyncio.gather(*(increment(store) for store in (one, two, one, two)))
        assert await one.read(key) == str(4 * rounds).encode()


async def test_a_change_made_elsewhere_is_seen_not_overwritten(account: Account,
                                                               face: str) -> None:
    """The ETag this process saw last is stale after another's commit: the
    acquire that tries it is refused (412), reads and takes the new data."""
    async with on_face(account.store(), face) as one, on_face(account.store(), face) as two:
        key = new_key()
        assert await one.create(key, b"0", ttl=LONG)
        await one.commit(await acquire_lease(one, key), b"1", ttl=LONG)
        await two.commit(await acquire_lease(two, key), b"2", ttl=LONG)
        lease = await acquire_lease(one, key)
        assert lease.data == b"2"
        with pytest.raises(LeaseLost):
            await two.release(Lease(key, lease.token - 1, b""))
        await one.commit(lease, b"3", ttl=LONG)
        assert await two.read(key) == b"3"


async def test_discard_deletes_the_entity_then_its_blob(account: Account, face: str) -> None:
    async with on_face(account.store(), face) as store:
        key = new_key()
        assert await store.create(key, secrets.token_bytes(MIB), ttl=LONG)
        holder = await acquire_lease(store, key)
        assert len(account.blob_names()) == 1
        assert await store.discard(key)
        assert account.blob_names() == []
        assert list(account.entities.list_entities()) == []
        with pytest.raises(LeaseLost):
            await store.commit(holder, secrets.token_bytes(MIB), ttl=LONG)
        assert account.blob_names() == []


@pytest.mark.parametrize("where", ["same process", "other process"])
async def test_a_commit_racing_a_discard_never_brings_the_session_back(
    account: Account, face: str, where: str
) -> None:
    """A holder's commit of data in a blob and an operator's discard, run at
    once, round after round: the commit is applied first (then discarded) or
    refused with ``LeaseLost`` (both happen in most runs); either way the entity is
    gone and so are all blobs. The discarder in another process has no ETag
    of the commit's; in the same one, the commit's cache entry is the one the
    discard drops."""
    async with on_face(account.store(inline_limit=0), face) as holder_store, \
            on_face(account.store(inline_limit=0), face) as other:
        operator = holder_store if where == "same process" else other
        outcomes: set[str] = set()
        for _ in range(12):
            key = new_key()
            assert await holder_store.create(key, b"v0", ttl=LONG)
            lease = await acquire_lease(holder_store, key)

            async def commit(lease: Lease = lease) -> str:
                try:
                    await holder_store.commit(lease, b"v1", ttl=LONG)
                except LeaseLost:
                    return "refused"
                return "applied"

            outcome, discarded = await asyncio.gather(commit(), operator.discard(key))
            outcomes.add(outcome)
            assert discarded is True
            assert await holder_store.read(key) is None
            assert await other.read(key) is None
            assert await holder_store.inspect(key) is None
        assert list(account.entities.list_entities()) == []
        assert account.blob_names() == []
        assert outcomes <= {"applied", "refused"}


async def test_scan_downloads_only_the_blobs_it_needs(account: Account, face: str) -> None:
    """Inline and blob-held data side by side in one scan, one entity a batch."""
    async with on_face(account.store(inline_limit=1024), face) as store:
        small, large = new_key(), new_key()
        big = secrets.token_bytes(MIB)
        assert await store.create(small, b"small", ttl=LONG)
        assert await store.create(large, big, ttl=LONG)
        seen = {record.key: record.data async for batch in store.scan(batch_size=1)
                for record in batch}
        assert seen == {small: b"small", large: big}


async def test_a_missing_table_says_to_run_setup(account: Account, face: str) -> None:
    store = account.store(create=False)
    async with on_face(store, face) as faced:
        with pytest.raises(StoreError, match=r"setup\(\)"):
            await faced.read(new_key())


async def test_nothing_listening_is_unavailable_within_timeout(face: str) -> None:
    """Refused connections are retried (known not sent) until ``timeout``."""
    connection_string = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    store = AzureTableStore(connection_string, timeout=1.0, create=False)
    async with on_face(store, face) as faced:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await faced.read(new_key())
        assert time.monotonic() - started < 3.0
        assert not raised.value.maybe_applied
        assert "127.0.0.1:9" in str(raised.value)


async def test_a_stalled_service_is_unavailable_within_timeout(
    azurite_factory: Callable[[], Azurite], face: str
) -> None:
    server = azurite_factory()
    async with on_face(AzureTableStore(server.connection_string, timeout=1.0), face) as store:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        server.stall()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.read(key)
            assert time.monotonic() - started < 4.0
        finally:
            server.resume()
        assert await store.read(key) == b"v0"


def test_bad_names_and_limits_are_refused_at_construction() -> None:
    from sessionware import ConfigurationError

    connection_string = "UseDevelopmentStorage=true"
    for options in ({"table": "no-dashes"}, {"container": "No_Caps"},
                    {"inline_limit": MAX_INLINE + 1}):
        with pytest.raises(ConfigurationError):
            AzureTableStore(connection_string, **options)  # type: ignore[arg-type]


# -- ETags that repeat (Azurite's gap, made to bite by a slowed clock) ---------------

def test_azurite_on_a_slowed_clock_lets_a_stale_etag_through(
    azurite_factory: Callable[..., Azurite],
) -> None:
    """The gap itself, with the SDK alone: two writes within one tick of
    Azurite's ETag clock leave the ETag as it was, so a write conditioned on
    the ETag from before the second one is accepted."""
    server = azurite_factory(slow_clock=True)
    with TableClient.from_connection_string(server.connection_string, "gap") as table:
        table.create_table()
        table.upsert_entity({"PartitionKey": "k", "RowKey": ROW, "N": 0})
        etag = table.get_entity("k", ROW).metadata["etag"]
        for _ in range(400):  # each try lands in one tick of the slowed clock only now and then
            seen = _merge(table, 1, etag)
            etag = _merge(table, 2, seen)  # seen is stale from here on
            try:
                etag = _merge(table, 3, seen)
            except ResourceModifiedError:
                continue
            return
    pytest.fail("Azurite never let a stale ETag through")


def _merge(table: TableClient, n: int, etag: str) -> str:
    answer = table.update_entity({"PartitionKey": "k", "RowKey": ROW, "N": n},
                                 mode=UpdateMode.MERGE, etag=etag,
                                 match_condition=MatchConditions.IfNotModified)
    return str(answer["etag"])


BATCHES_UNTIL_REPEAT = 8


async def test_when_etags_repeat_writes_are_confirmed_and_no_increment_is_lost(
    azurite_factory: Callable[..., Azurite], face: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two store instances (two processes' ETag caches) increment one session
    on the slowed Azurite: writes answered with the ETag they were conditioned
    on are confirmed (logged), and none of the increments is lost."""
    server = azurite_factory(slow_clock=True)
    for face_name in ("_async", "_sync"):  # where the confirming writes log
        name = f"sessionware.{face_name}.stores.azure_entities"
        caplog.set_level(logging.DEBUG, logger=name)
    stores = [AzureTableStore(server.connection_string) for _ in range(2)]
    async with on_face(stores[0], face) as one, on_face(stores[1], face) as two:
        key, rounds = new_key(), 6
        assert await one.create(key, b"0", ttl=LONG)
        inside = 0

        async def increment(store: Store) -> None:
            nonlocal inside
            for _ in range(rounds):
                lease = await acquire_waiting(store, key, timeout=LONG)
                inside += 1
                assert inside == 1, "two holders at once"
                await asyncio.sleep(0)
                inside -= 1
                await store.commit(lease, str(int(lease.data) + 1).encode(), ttl=LONG)

        def confirmed() -> bool:
            return any("conditioned on: confirming" in r.getMessage() for r in caplog.records)

        # Whether an ETag repeats is up to the timing (Azurite's slowed clock
        # still ticks between two writes now and then): rounds until one did.
        total = 0
        for _ in range(BATCHES_UNTIL_REPEAT):
            await asyncio.gather(*(increment(store) for store in (one, two, one, two)))
            total += 4 * rounds
            assert await one.read(key) == str(total).encode()
            if confirmed():
                break
    assert confirmed(), "the ETag never repeated: the test proved nothing"


# -- a SAS with the permissions the docs name ----------------------------------------

RUNTIME_PERMISSIONS = "racudl"  # docs/stores/azure.md, Permissions


def sas_connection_string(server: Azurite, permission: str, resource_types: str = "co") -> str:
    sas = generate_account_sas(ACCOUNT, ACCOUNT_KEY, resource_types, permission,
                               datetime.now(UTC) + timedelta(hours=1), services="bt")
    return (f"TableEndpoint=http://{HOST}:{server.table.port}/{ACCOUNT};"
            f"BlobEndpoint=http://{HOST}:{server.blob.port}/{ACCOUNT};"
            f"SharedAccessSignature={sas}")


async def every_operation(store: Store) -> None:
    """Each kind of request the store makes: table and blob, purge included."""
    key = new_key()
    assert await store.create(key, b"v0", ttl=LONG)
    await store.commit(await acquire_lease(store, key), secrets.token_bytes(MIB), ttl=LONG)
    assert len(await store.read(key) or b"") == MIB
    await store.delete(await acquire_lease(store, key))
    # the operators' operations, with data in a blob: covered by the same SAS
    assert await store.create(key, secrets.token_bytes(MIB), ttl=LONG)
    assert (record := await store.inspect(key)) is not None and len(record.data) == MIB
    assert [len(record.data) async for batch in store.scan() for record in batch
            if record.key == key] == [MIB]  # the table may hold other tests' sessions
    assert await store.discard(key)
    await store.purge_expired()


async def test_an_account_sas_with_the_documented_permissions_does_everything(
    azurite: Azurite, face: str
) -> None:
    """``ss=bt&srt=co&sp=racudl`` sets up the table and container and runs
    every operation (Azurite checks SAS permissions as Azure does)."""
    names = {"table": f"sas{secrets.token_hex(6)}", "container": f"sas-{secrets.token_hex(6)}"}
    store = AzureTableStore(sas_connection_string(azurite, RUNTIME_PERMISSIONS),
                            purge_interval=3600, **names)
    async with on_face(store, face) as faced:
        await every_operation(faced)


@pytest.mark.faces("async")
@pytest.mark.parametrize("missing", [*RUNTIME_PERMISSIONS, "srt=c"])
async def test_each_documented_permission_is_needed(azurite: Azurite, face: str,
                                                    missing: str) -> None:
    names = {"table": "sastable", "container": "sas-container"}
    async with AzureTableStore(azurite.connection_string, **names):
        pass  # set up with the account key: the SAS below may lack what setup needs
    permission = RUNTIME_PERMISSIONS.replace(missing, "")
    resource_types = "o" if missing == "srt=c" else "co"
    store = AzureTableStore(sas_connection_string(azurite, permission, resource_types),
                            create=False, purge_interval=3600, **names)
    async with on_face(store, face) as faced:
        with pytest.raises(StoreError, match="SAS"):
            await every_operation(faced)
