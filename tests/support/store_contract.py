"""The store contract, written once (see ``sessionware/_async/stores/base.py``), run on
both faces of every store.

A store joins by subclassing :class:`StoreContract` in a ``test_*.py`` module and
overriding the ``fresh_store`` fixture, which returns a new store of its async
class, not set up. Every test then runs twice (``face``, see tests/support/faces.py):
on that store, and on its blocking twin (``store.sync()``) driven on real
threads, so that the concurrency tests race real threads against the blocking
face. Every test uses fresh random keys, so one store (and one server) can serve
every test.

Durations are short but never raced: a test that needs a lease or an expiry to
lapse sleeps a clear margin past its deadline, and a test that needs it *not* to
lapse gives it many seconds. Steps that need a short expiry not to lapse *yet*
(set it, then slide it) run under :func:`before_lapse`, which tells a slow
machine from a store that expires too soon by the clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from sessionware import LeaseLost
from sessionware.stores import Lease, Locked, Record, Store
from tests.support.faces import on_face

LONG = 30.0  # a lease or expiry that must not lapse during a test
SHORT = 0.2  # one that must: tests sleep SHORT + MARGIN
MARGIN = 0.3

T = TypeVar("T")


def new_key() -> str:
    return secrets.token_hex(32)


async def acquire_lease(store: Store, key: str, lease_ttl: float = LONG) -> Lease:
    got = await store.acquire(key, lease_ttl=lease_ttl)
    assert isinstance(got, Lease), got
    return got


async def before_lapse(steps: Callable[[float], Awaitable[T]], ttl: float) -> tuple[T, float]:
    """Run ``steps(ttl)``, which set an expiry ``ttl`` seconds away and need it
    not to have lapsed by their end; return what they returned and the ``ttl``
    they ran with. An
    attempt that failed once ``ttl`` had passed found nothing wrong (the store
    was right to expire the record): it is made again, with twice the time. One
    that failed sooner fails the test."""
    for _ in range(4):
        started = time.monotonic()
        try:
            return await steps(ttl), ttl
        except (AssertionError, LeaseLost):
            if time.monotonic() - started < ttl:
                raise
        ttl *= 2
    pytest.fail(f"four attempts outran their expiry, the last one {ttl / 2} s")


async def acquire_waiting(store: Store, key: str, timeout: float, lease_ttl: float = LONG) -> Lease:
    """Acquire as the core does: acquire, else wait for a release, until timeout."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        got = await store.acquire(key, lease_ttl=lease_ttl)
        if isinstance(got, Lease):
            return got
        assert isinstance(got, Locked), "session vanished while waiting"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(key)
        await store.wait(key, min(remaining, got.retry_after), attempt)
        attempt += 1


OPERATORS = ("discard", "inspect", "scan")
"""The operators' operations. A store that does not implement them yet says
why in ``operators_pending``: their cases are then expected to fail, and do
so at once (the base class's defaults are found, nothing is run); once the
store implements them, ``operators_pending`` must go."""


class StoreContract:
    operators_pending: str | None = None
    # a lease or expiry that must lapse, and the slack after it; a store whose
    # operations take several requests (Azure's blobs) raises them, so that its
    # steps before the sleep fit in ``short`` on a loaded machine
    short = SHORT
    margin = MARGIN

    @pytest.fixture
    def fresh_store(self) -> Store:  # pragma: no cover - overridden by every store
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _operators_pending(self, request: pytest.FixtureRequest) -> None:
        if not any(op in request.node.name for op in OPERATORS):
            return
        cls = type(request.getfixturevalue("fresh_store"))
        missing = [op for op in OPERATORS if getattr(cls, op) is getattr(Store, op)]
        if self.operators_pending is None:
            return  # a store that lacks one fails its cases, with NotImplementedError
        assert missing, (f"{cls.__name__} implements {', '.join(OPERATORS)}: remove "
                         "operators_pending from its contract tests")
        pytest.xfail(f"{self.operators_pending} (missing: {', '.join(missing)})")

    @pytest.fixture
    async def store(self, fresh_store: Store, face: str) -> AsyncIterator[Store]:
        async with on_face(fresh_store, face) as store:
            yield store

    @pytest.fixture
    async def key(self, store: Store) -> str:
        key = new_key()
        assert await store.create(key, b"v0", ttl=LONG)
        return key

    # -- create and acquire -------------------------------------------------

    async def test_acquire_unknown_key_is_none_and_creates_nothing(self, store: Store) -> None:
        key = new_key()
        assert await store.acquire(key, lease_ttl=LONG) is None
        assert await store.read(key) is None

    async def test_create_then_acquire_loads_data(self, store: Store, key: str) -> None:
        lease = await acquire_lease(store, key)
        assert lease.key == key
        assert lease.data == b"v0"

    async def test_create_never_overwrites(self, store: Store, key: str) -> None:
        assert not await store.create(key, b"other", ttl=LONG)
        assert await store.read(key) == b"v0"

    async def test_create_holds_arbitrary_bytes(self, store: Store) -> None:
        key, data = new_key(), bytes(range(256)) * 64
        assert await store.create(key, data, ttl=LONG)
        assert (await acquire_lease(store, key)).data == data

    # -- the lock -----------------------------------------------------------

    async def test_second_acquire_is_locked_with_retry_hint(self, store: Store, key: str) -> None:
        await acquire_lease(store, key, lease_ttl=5.0)
        locked = await store.acquire(key, lease_ttl=5.0)
        assert isinstance(locked, Locked)
        assert 0 < locked.retry_after <= 5.0

    async def test_tokens_grow_at_every_acquire(self, store: Store, key: str) -> None:
        tokens = []
        for _ in range(3):
            lease = await acquire_lease(store, key)
            tokens.append(lease.token)
            await store.release(lease)
        assert tokens == sorted(set(tokens))

    async def test_commit_writes_and_unlocks(self, store: Store, key: str) -> None:
        lease = await acquire_lease(store, key)
        await store.commit(lease, b"v1", ttl=LONG)
        again = await acquire_lease(store, key)
        assert again.data == b"v1"
        assert again.token > lease.token

    async def test_release_unlocks_without_writing(self, store: Store, key: str) -> None:
        await store.release(await acquire_lease(store, key))
        assert (await acquire_lease(store, key)).data == b"v0"

    async def test_lapsed_lease_is_taken_over(self, store: Store, key: str) -> None:
        await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_stale_commit_is_refused_and_newer_data_stays(
        self, store: Store, key: str
    ) -> None:
        stale = await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        fresh = await acquire_lease(store, key)
        await store.commit(fresh, b"fresh", ttl=LONG)
        with pytest.raises(LeaseLost):
            await store.commit(stale, b"stale", ttl=LONG)
        assert await store.read(key) == b"fresh"

    async def test_stale_holder_cannot_release_renew_or_delete(
        self, store: Store, key: str
    ) -> None:
        stale = await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        fresh = await acquire_lease(store, key)
        with pytest.raises(LeaseLost):
            await store.release(stale)
        with pytest.raises(LeaseLost):
            await store.renew(stale, lease_ttl=LONG)
        with pytest.raises(LeaseLost):
            await store.delete(stale)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        await store.commit(fresh, b"fresh", ttl=LONG)
        assert await store.read(key) == b"fresh"

    async def test_lapsed_lease_without_new_holder_may_still_commit(
        self, store: Store, key: str
    ) -> None:
        lease = await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        await store.commit(lease, b"late", ttl=LONG)
        assert await store.read(key) == b"late"

    async def test_committed_lease_is_spent(self, store: Store, key: str) -> None:
        lease = await acquire_lease(store, key)
        await store.commit(lease, b"v1", ttl=LONG)
        await acquire_lease(store, key)
        with pytest.raises(LeaseLost):
            await store.commit(lease, b"again", ttl=LONG)
        assert await store.read(key) == b"v1"

    async def test_renew_keeps_the_lock(self, store: Store, key: str) -> None:
        lease = await acquire_lease(store, key, lease_ttl=self.short)
        await store.renew(lease, lease_ttl=LONG)
        await asyncio.sleep(self.short + self.margin)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        await store.commit(lease, b"v1", ttl=LONG)
        assert await store.read(key) == b"v1"

    async def test_renew_after_commit_is_refused_and_locks_nothing(
        self, store: Store, key: str
    ) -> None:
        lease = await acquire_lease(store, key)
        await store.commit(lease, b"v1", ttl=LONG)
        with pytest.raises(LeaseLost):
            await store.renew(lease, lease_ttl=LONG)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_renew_after_release_is_refused_and_locks_nothing(
        self, store: Store, key: str
    ) -> None:
        lease = await acquire_lease(store, key)
        await store.release(lease)
        with pytest.raises(LeaseLost):
            await store.renew(lease, lease_ttl=LONG)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_lapsed_lease_without_new_holder_may_still_renew(
        self, store: Store, key: str
    ) -> None:
        lease = await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        await store.renew(lease, lease_ttl=LONG)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        await store.commit(lease, b"v1", ttl=LONG)
        assert await store.read(key) == b"v1"

    async def test_lease_of_a_deleted_record_never_matches_its_successor(
        self, store: Store, key: str
    ) -> None:
        old = await acquire_lease(store, key)
        await store.delete(old)
        assert await store.create(key, b"successor", ttl=LONG)
        new = await acquire_lease(store, key)
        assert new.token != old.token
        with pytest.raises(LeaseLost):
            await store.commit(old, b"stale", ttl=LONG)
        await store.commit(new, b"v1", ttl=LONG)
        assert await store.read(key) == b"v1"

    # -- reads ----------------------------------------------------------------

    async def test_read_takes_no_lock(self, store: Store, key: str) -> None:
        assert await store.read(key) == b"v0"
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_read_sees_last_commit_while_locked(self, store: Store, key: str) -> None:
        lease = await acquire_lease(store, key)
        await store.commit(lease, b"v1", ttl=LONG)
        await acquire_lease(store, key)
        assert await store.read(key) == b"v1"

    # -- expiry ---------------------------------------------------------------

    async def test_idle_expiry_removes_the_session(self, store: Store) -> None:
        key = new_key()
        assert await store.create(key, b"v0", ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        assert await store.read(key) is None
        assert await store.acquire(key, lease_ttl=LONG) is None
        assert await store.create(key, b"new", ttl=LONG)

    async def test_commit_slides_the_idle_expiry(self, store: Store) -> None:
        async def slide(ttl: float) -> str:
            key = new_key()
            assert await store.create(key, b"v0", ttl=ttl)
            await store.commit(await acquire_lease(store, key), b"v1", ttl=LONG)
            return key

        key, ttl = await before_lapse(slide, self.short)
        await asyncio.sleep(ttl + self.margin)
        assert await store.read(key) == b"v1"

    async def test_release_and_read_slide_the_expiry_unless_throttled(
        self, store: Store
    ) -> None:
        async def slide(ttl: float) -> tuple[str, str, str]:
            slid, kept, read_slid = new_key(), new_key(), new_key()
            for key in (slid, kept, read_slid):
                assert await store.create(key, b"v0", ttl=ttl)
            await store.release(await acquire_lease(store, slid), ttl=LONG, refresh_after=1.0)
            await store.release(await acquire_lease(store, kept), ttl=LONG, refresh_after=LONG)
            assert await store.read(read_slid, ttl=LONG, refresh_after=1.0) == b"v0"
            return slid, kept, read_slid

        (slid, kept, read_slid), ttl = await before_lapse(slide, self.short)
        await asyncio.sleep(ttl + self.margin)
        assert await store.read(slid) == b"v0"
        assert await store.read(read_slid) == b"v0"
        assert await store.read(kept) is None

    async def test_absolute_lifetime_caps_every_slide(self, store: Store) -> None:
        async def slide(ttl: float) -> str:
            key = new_key()
            assert await store.create(key, b"v0", ttl=LONG, absolute_ttl=ttl)
            await store.commit(await acquire_lease(store, key), b"v1", ttl=LONG)
            assert await store.read(key, ttl=LONG) == b"v1"
            return key

        key, ttl = await before_lapse(slide, self.short)
        await asyncio.sleep(ttl + self.margin)
        assert await store.read(key) is None
        assert await store.acquire(key, lease_ttl=LONG) is None

    async def test_purge_expired_removes_expired_records_only(self, store: Store) -> None:
        # The store may be shared with other tests, and a store whose backend
        # expires records by itself may report 0: only the outcome is checked.
        expired, live = [new_key() for _ in range(3)], new_key()
        for key in expired:
            assert await store.create(key, b"v0", ttl=self.short)
        assert await store.create(live, b"v0", ttl=LONG)
        await asyncio.sleep(self.short + self.margin)
        batches: list[int] = []
        purged = await store.purge_expired(progress=batches.append)
        assert isinstance(purged, int) and purged >= 0
        assert sum(batches) == purged and all(count > 0 for count in batches)
        for key in expired:
            assert await store.read(key) is None
            assert await store.acquire(key, lease_ttl=LONG) is None
        assert await store.read(live) == b"v0"

    # -- delete -----------------------------------------------------------------

    async def test_delete_removes_the_session(self, store: Store, key: str) -> None:
        await store.delete(await acquire_lease(store, key))
        assert await store.read(key) is None
        assert await store.acquire(key, lease_ttl=LONG) is None

    # -- discard, inspect, scan (the operators' operations) ----------------------

    async def test_discard_removes_an_unlocked_record(self, store: Store, key: str) -> None:
        assert await store.discard(key) is True
        assert await store.read(key) is None
        assert await store.acquire(key, lease_ttl=LONG) is None
        assert await store.discard(key) is False

    async def test_discard_of_an_absent_or_expired_record_is_false(self, store: Store) -> None:
        assert await store.discard(new_key()) is False
        key = new_key()
        assert await store.create(key, b"v0", ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        assert await store.discard(key) is False

    async def test_discard_of_a_locked_record_fences_its_holder_out(
        self, store: Store, key: str
    ) -> None:
        holder = await acquire_lease(store, key)
        assert await store.discard(key) is True
        for write in (lambda: store.commit(holder, b"resurrected", ttl=LONG),
                      lambda: store.release(holder, ttl=LONG),
                      lambda: store.renew(holder, lease_ttl=LONG),
                      lambda: store.delete(holder)):
            with pytest.raises(LeaseLost):
                await write()
        assert await store.read(key) is None
        assert await store.inspect(key) is None

    async def test_a_discarded_holder_never_matches_a_record_created_again(
        self, store: Store, key: str
    ) -> None:
        holder = await acquire_lease(store, key)
        assert await store.discard(key)
        assert await store.create(key, b"new", ttl=LONG)
        with pytest.raises(LeaseLost):
            await store.commit(holder, b"stale", ttl=LONG)
        assert await store.read(key) == b"new"

    async def test_discard_wakes_a_waiter_who_finds_the_session_gone(
        self, store: Store, key: str
    ) -> None:
        await acquire_lease(store, key, lease_ttl=LONG)

        async def waiter() -> Lease | Locked | None:
            attempt = 0
            while isinstance(got := await store.acquire(key, lease_ttl=LONG), Locked):
                await store.wait(key, got.retry_after, attempt)
                attempt += 1
            return got

        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        discarded = time.monotonic()
        assert await store.discard(key)
        assert await asyncio.wait_for(waiting, 5.0) is None
        assert time.monotonic() - discarded < 1.0

    async def test_inspect_reports_data_expiry_and_lock(self, store: Store) -> None:
        key = new_key()
        assert await store.inspect(key) is None
        before = time.time()
        assert await store.create(key, b"v0", ttl=LONG)
        record = await store.inspect(key)
        assert isinstance(record, Record)
        assert (record.key, record.data, record.locked_until) == (key, b"v0", None)
        # the store's clock is this host's (the test servers run here)
        assert before + LONG - 1.0 <= record.expires_at <= time.time() + LONG + 1.0
        lease = await acquire_lease(store, key, lease_ttl=LONG / 2)
        locked = await store.inspect(key)
        assert locked is not None and locked.locked_until is not None
        assert before + LONG / 2 - 1.0 <= locked.locked_until <= time.time() + LONG / 2 + 1.0
        await store.commit(lease, b"v1", ttl=LONG)
        committed = await store.inspect(key)
        assert committed is not None
        assert (committed.data, committed.locked_until) == (b"v1", None)

    async def test_inspect_reports_when_created_and_when_locked(self, store: Store) -> None:
        """``created_at`` is the create's moment, for good; ``locked_at`` the
        acquire's, kept by renewals and gone with the lock."""
        key, slack = new_key(), 1.0
        before = time.time()
        assert await store.create(key, b"v0", ttl=LONG)
        created = await store.inspect(key)
        assert created is not None and created.created_at is not None
        assert before - slack <= created.created_at <= time.time() + slack
        assert created.locked_at is None
        await asyncio.sleep(0.05)
        before = time.time()
        lease = await acquire_lease(store, key)
        held = await store.inspect(key)
        assert held is not None and held.locked_at is not None
        assert before - slack <= held.locked_at <= time.time() + slack
        assert held.created_at == pytest.approx(created.created_at, abs=0.002)
        await asyncio.sleep(0.05)
        await store.renew(lease, lease_ttl=LONG)
        renewed = await store.inspect(key)
        assert renewed is not None and renewed.locked_at is not None
        assert renewed.locked_at == pytest.approx(held.locked_at, abs=0.002)
        await store.commit(lease, b"v1", ttl=LONG)
        committed = await store.inspect(key)
        assert committed is not None
        assert (committed.locked_at, committed.locked_until) == (None, None)
        assert committed.created_at == pytest.approx(created.created_at, abs=0.002)
        released = await acquire_lease(store, key)
        await store.release(released)
        after_release = await store.inspect(key)
        assert after_release is not None and after_release.locked_at is None

    async def test_inspect_dates_a_taken_over_lease_from_its_new_holder(
        self, store: Store, key: str
    ) -> None:
        await acquire_lease(store, key, lease_ttl=self.short)
        lapsed = await store.inspect(key)
        await asyncio.sleep(self.short + self.margin)
        await acquire_lease(store, key)
        taken = await store.inspect(key)
        assert lapsed is not None and lapsed.locked_at is not None
        assert taken is not None and taken.locked_at is not None
        assert taken.locked_at >= lapsed.locked_at + self.short

    async def test_inspect_takes_no_lock_and_slides_nothing(self, store: Store) -> None:
        key = new_key()
        assert await store.create(key, b"v0", ttl=1.0)
        first = await store.inspect(key)
        await asyncio.sleep(0.1)
        second = await store.inspect(key)
        assert first is not None and second is not None
        assert second.expires_at == pytest.approx(first.expires_at, abs=0.002)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_inspect_reports_a_lapsed_lease_in_the_past(self, store: Store, key: str) -> None:
        await acquire_lease(store, key, lease_ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        record = await store.inspect(key)
        assert record is not None and record.locked_until is not None
        assert record.locked_until < time.time()

    async def test_inspect_of_an_expired_record_is_none(self, store: Store) -> None:
        key = new_key()
        assert await store.create(key, b"v0", ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        assert await store.inspect(key) is None

    async def test_inspect_reports_the_expiry_capped_by_the_absolute_deadline(
        self, store: Store
    ) -> None:
        key = new_key()
        before = time.time()
        assert await store.create(key, b"v0", ttl=LONG, absolute_ttl=LONG / 3)
        record = await store.inspect(key)
        assert record is not None
        assert record.expires_at <= time.time() + LONG / 3 + 1.0
        assert record.expires_at >= before + LONG / 3 - 1.0

    async def test_scan_yields_live_records_in_batches(self, store: Store) -> None:
        # The store may be shared with other tests: only our keys are checked.
        live = {new_key(): f"v{n}".encode() for n in range(7)}
        for key, data in live.items():
            assert await store.create(key, data, ttl=LONG)
        locked = next(iter(live))
        await acquire_lease(store, locked)
        expired = new_key()
        assert await store.create(expired, b"gone", ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        seen: dict[str, Record] = {}
        async for batch in store.scan(batch_size=3):
            assert 0 < len(batch) <= 3
            for record in batch:
                assert isinstance(record, Record)
                seen[record.key] = record
        assert expired not in seen
        for key, data in live.items():
            assert seen[key].data == data
            assert (seen[key].locked_until is not None) == (key == locked)
            assert (seen[key].locked_at is not None) == (key == locked)
            assert seen[key].created_at is not None
            assert seen[key].expires_at > time.time() + LONG / 2

    async def test_a_scan_between_batches_holds_nothing(self, store: Store) -> None:
        """A scan suspended between its batches (the caller counts, prints a
        progress bar) blocks no write: each batch is one short read."""
        keys = [new_key() for _ in range(3)]
        for key in keys:
            assert await store.create(key, b"v0", ttl=LONG)
        batches = store.scan(batch_size=1)
        assert len(await anext(batches)) == 1
        lease = await asyncio.wait_for(acquire_lease(store, keys[0]), 5.0)
        await asyncio.wait_for(store.commit(lease, b"v1", ttl=LONG), 5.0)
        assert await asyncio.wait_for(store.create(new_key(), b"v", ttl=LONG), 5.0)
        assert await asyncio.wait_for(store.discard(keys[1]), 5.0)
        rest = [record async for batch in batches for record in batch]
        assert keys[1] not in {record.key for record in rest}

    async def test_scan_of_a_store_mostly_of_others_still_ends(self, store: Store) -> None:
        batches = 0
        async for _ in store.scan():
            batches += 1
            assert batches < 10_000
        assert batches >= 0

    # -- waiting --------------------------------------------------------------

    async def test_wait_returns_by_its_timeout(self, store: Store, key: str) -> None:
        await acquire_lease(store, key)
        started = time.monotonic()
        await store.wait(key, 0.2, 0)
        assert time.monotonic() - started < 5.0

    async def test_release_wakes_a_waiter_long_before_the_lease_lapses(
        self, store: Store, key: str
    ) -> None:
        holder = await acquire_lease(store, key, lease_ttl=LONG)
        waiter = asyncio.create_task(acquire_waiting(store, key, timeout=LONG))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        released = time.monotonic()
        await store.commit(holder, b"v1", ttl=LONG)
        lease = await asyncio.wait_for(waiter, 5.0)
        assert lease.data == b"v1"
        assert time.monotonic() - released < 1.0

    async def test_a_release_just_before_the_wait_does_not_hold_the_waiter(
        self, store: Store, key: str
    ) -> None:
        """The waiter found the session locked; the holder released it before
        the waiter began to wait (request threads interleave so on the sync
        face): the wait must not last until its timeout (the lease's
        ``retry_after``, seconds), as if the release had not happened."""
        holder = await acquire_lease(store, key)
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Locked)
        await store.commit(holder, b"v1", ttl=LONG)
        started = time.monotonic()
        await store.wait(key, 5.0, 0)
        assert time.monotonic() - started < 1.0
        assert isinstance(await store.acquire(key, lease_ttl=LONG), Lease)

    async def test_concurrent_increments_are_never_lost(self, store: Store) -> None:
        key, workers, rounds = new_key(), 8, 10
        assert await store.create(key, b"0", ttl=LONG)
        inside = 0

        async def increment() -> None:
            nonlocal inside
            for _ in range(rounds):
                lease = await acquire_waiting(store, key, timeout=LONG)
                inside += 1
                assert inside == 1, "two holders at once"
                await asyncio.sleep(0)
                inside -= 1
                await store.commit(lease, str(int(lease.data) + 1).encode(), ttl=LONG)

        await asyncio.gather(*(increment() for _ in range(workers)))
        assert await store.read(key) == str(workers * rounds).encode()


class ExactScanContract:
    """For stores given a fresh store per test: the scan sees exactly the live
    records, each once, whatever the batch size."""

    @pytest.mark.parametrize("batch_size", [1, 2, 5, 500])
    async def test_scan_yields_every_live_record_once(self, store: Store,
                                                      batch_size: int) -> None:
        live = {new_key() for _ in range(5)}
        for key in live:
            assert await store.create(key, b"v", ttl=LONG)
        keys = [record.key async for batch in store.scan(batch_size=batch_size)
                for record in batch]
        assert sorted(keys) == sorted(live)


async def background_purge_done(store: Store) -> None:
    """Until the store's background purge (if it has one, and it runs) ends."""
    inner = getattr(store, "inner", store)  # the twin behind the sync face
    purging = getattr(inner, "_purging", None)
    deadline = time.monotonic() + 10.0
    while purging is not None and purging.running:
        assert time.monotonic() < deadline, "the background purge took too long for the test"
        await asyncio.sleep(0.005)


class ExactPurgeContract:
    """For stores that remove expired records only when asked (or swept), given
    a fresh store per test: ``purge_expired`` counts exactly what it removed."""

    short = SHORT
    margin = MARGIN

    async def test_purge_expired_counts_exactly_what_it_removed(self, store: Store) -> None:
        expired, live = [new_key() for _ in range(5)], new_key()
        assert await store.create(live, b"v0", ttl=LONG)
        # the background purge this first operation started (PostgreSQL's,
        # Azure's) ends before the records to expire exist; the next one is
        # due in half a purge interval at the soonest
        await background_purge_done(store)
        for key in expired:
            assert await store.create(key, b"v0", ttl=self.short)
        await asyncio.sleep(self.short + self.margin)
        batches: list[int] = []
        assert await store.purge_expired(progress=batches.append) == len(expired)
        assert sum(batches) == len(expired)
        assert await store.purge_expired() == 0
        assert await store.read(live) == b"v0"
