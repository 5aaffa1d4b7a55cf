"""Sessions bound to users, and SessionAdmin, on every store and both faces:
the real middleware and app in process (tests/support/apps/served.py), the admin
beside it on the same store, as an app's admin page would be.

The index must list every live session of its user at every moment: on the
async face every store write goes through :class:`IndexChecker`, which fails
the test the moment a session is written bound to a user whose index does
not list it, or an index drops a session still live and bound.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionware import SessionAdmin, SyncSessionAdmin
from sessionware._async.core import RETIRED
from sessionware._async.stores.base import SCAN_BATCH
from sessionware._async.users import decode_index, is_index, user_index_key
from sessionware.cookies import CookieSigner, store_key
from sessionware.session import USER_KEY
from sessionware.stores import Lease, Locked, MemoryStore, Record, Store
from sessionware.telemetry import SessionEvent
from tests.support.apps.counter import SECRET
from tests.support.apps.served import Served, serving
from tests.support.faces import sync_face
from tests.support.helpers import cookie_header, session_cookie

STORES = ["memory", "sqlite", "redis", "postgres", "azure", "dynamodb", "mongodb", "ravendb"]
USERS = ["alice", "bob", "carol"]


@pytest.fixture(params=STORES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    kind = request.param
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        from sessionware.stores import SQLiteStore

        return SQLiteStore(tmp_path / "sessions.db")
    if kind == "azure":
        from sessionware.stores import AzureTableStore

        suffix = secrets.token_hex(6)
        return AzureTableStore(request.getfixturevalue("azure_connection_string"),
                               table=f"users{suffix}", container=f"users-{suffix}")
    if kind == "dynamodb":
        from sessionware.stores import DynamoDBStore
        from tests.support.servers.dynamodb import store_options

        return DynamoDBStore(f"user_sessions_{secrets.token_hex(4)}",
                             **store_options(request.getfixturevalue("dynamodb_endpoint")))
    if kind == "mongodb":
        from sessionware.stores import MongoDBStore

        return MongoDBStore(request.getfixturevalue("mongodb_url"),
                            database=f"users_{secrets.token_hex(4)}")
    if kind == "ravendb":
        from sessionware.stores import RavenDBStore

        target = request.getfixturevalue("ravendb")
        return RavenDBStore(target.url, target.swept, collection=target.collection())
    if kind == "redis":
        from sessionware.stores import RedisStore

        return RedisStore(request.getfixturevalue("redis_url"))
    from sessionware.stores import PostgresStore

    return PostgresStore(request.getfixturevalue("postgres_dsn"),
                         table=f"user_sessions_{secrets.token_hex(4)}")


class IndexChecker(Store):
    """A real store whose writes check the index invariant as they happen."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.users: dict[str, str] = {}  # index key -> user, for the users of the test
        self.violations: list[str] = []

    async def _bound_user(self, data: bytes) -> str | None:
        if data.startswith(b"\x00"):
            return None
        user = json.loads(data).get(USER_KEY)
        return user if isinstance(user, str) else None

    async def _listed(self, user: str, key: str) -> list[str]:
        """The violation if a write of ``key`` bound to ``user`` succeeded now
        (a write refused as LeaseLost breaks nothing)."""
        raw = await self.inner.read(user_index_key(user))
        if raw is None or key not in decode_index(raw).sessions:
            return [f"{key[:8]} written bound to {user}, not in the index"]
        return []

    async def _dropping(self, index_key: str, keep: set[str]) -> None:
        """Before an index write that keeps only ``keep``: every key it drops
        must have no live session bound to its user."""
        user = self.users.get(index_key)
        raw = await self.inner.read(index_key)
        if user is None or raw is None:
            return
        for key in set(decode_index(raw).sessions) - keep:
            record = await self.inner.inspect(key)
            if record is not None and await self._bound_user(record.data) == user:
                self.violations.append(f"{key[:8]} dropped from {user}'s index while live")

    async def setup(self) -> None:
        await self.inner.setup()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        return await self.inner.acquire(key, lease_ttl=lease_ttl)

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        unlisted: list[str] = []
        if is_index(data):
            await self._dropping(lease.key, set(decode_index(data).sessions))
        elif (user := await self._bound_user(data)) is not None:
            unlisted = await self._listed(user, lease.key)
        await self.inner.commit(lease, data, ttl=ttl)
        self.violations += unlisted

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        unlisted: list[str] = []
        if not is_index(data) and (user := await self._bound_user(data)) is not None:
            unlisted = await self._listed(user, key)
        created = await self.inner.create(key, data, ttl=ttl, absolute_ttl=absolute_ttl)
        if created:
            self.violations += unlisted
        return created

    async def delete(self, lease: Lease) -> None:
        await self._dropping(lease.key, set())
        await self.inner.delete(lease)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self.inner.release(lease, ttl=ttl, refresh_after=refresh_after)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self.inner.renew(lease, lease_ttl=lease_ttl)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        return await self.inner.read(key, ttl=ttl, refresh_after=refresh_after)

    async def purge_expired(self) -> int:
        return await self.inner.purge_expired()

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self.inner.wait(key, timeout, attempt)

    async def discard(self, key: str) -> bool:
        return await self.inner.discard(key)

    async def inspect(self, key: str) -> Record | None:
        return await self.inner.inspect(key)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        async for batch in self.inner.scan(batch_size=batch_size):
            yield batch


class Admin:
    """The admin of the face under test, called from the test's loop (the
    sync one on a thread, as a WSGI admin page would call it)."""

    def __init__(self, admin: SessionAdmin | SyncSessionAdmin) -> None:
        self.admin = admin

    async def __call__(self, operation: str, *args: Any) -> Any:
        method = getattr(self.admin, operation)
        if isinstance(self.admin, SessionAdmin):
            return await method(*args)
        return await asyncio.to_thread(method, *args)


class World:
    def __init__(self, app: Served, admin: Admin, events: list[SessionEvent],
                 checker: IndexChecker | None, store: Any) -> None:
        self.app, self.admin, self.events, self.checker, self.store = (
            app, admin, events, checker, store)
        # user ids of this test alone: a store (one Redis server) may be shared
        self.suffix = secrets.token_hex(4)
        for user in USERS:
            if checker is not None:
                checker.users[user_index_key(self.user(user))] = self.user(user)

    def user(self, name: str) -> str:
        return f"{name}-{self.suffix}" if name else ""

    async def inspect(self, key: str) -> Record | None:
        if isinstance(self.store, Store):
            return await self.store.inspect(key)
        record: Record | None = await asyncio.to_thread(self.store.inspect, key)
        return record


@pytest.fixture
async def world(fresh_store: Store, face: str) -> AsyncIterator[World]:
    events: list[SessionEvent] = []
    checker = IndexChecker(fresh_store) if face == "async" else None
    store: Store = checker if checker is not None else fresh_store
    async with serving(store, face) as app:
        if face == "async":
            admin = Admin(SessionAdmin(store, secret_key=SECRET, on_event=events.append))
            faced: Any = store
        else:
            faced = sync_face(fresh_store)
            admin = Admin(SyncSessionAdmin(faced, secret_key=SECRET, on_event=events.append))
        yield World(app, admin, events, checker, faced)
        app.release()
    if checker is not None:
        assert checker.violations == []


def key_of(cookie: str) -> str:
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    return store_key(session_id)


async def log_in(client: httpx.AsyncClient, user: str, cookie: str | None = None,
                 regenerate: bool = True) -> str:
    headers = cookie_header(cookie) if cookie else {}
    client.cookies.clear()  # each login its own browser: only the cookie given is sent
    response = await client.get(f"/bind?user={user}&regenerate={int(regenerate)}",
                                headers=headers)
    client.cookies.clear()
    assert response.status_code == 200, response.text
    new = session_cookie(response)
    return new or cookie or ""


async def counter(client: httpx.AsyncClient, cookie: str) -> str:
    client.cookies.clear()
    return (await client.get("/n", headers=cookie_header(cookie))).text


async def listed(world: World, user: str) -> set[str]:
    return {s.store_key for s in await world.admin("user_sessions", user)}


# -- binding and listing ------------------------------------------------------------


async def test_bound_sessions_are_listed_with_times(world: World) -> None:
    async with world.app.client() as client:
        started = time.time()
        cookies = [await log_in(client, world.user("alice")) for _ in range(3)]
        bob = await log_in(client, world.user("bob"))
    sessions = await world.admin("user_sessions", world.user("alice"))
    assert {s.store_key for s in sessions} == {key_of(c) for c in cookies}
    for s in sessions:
        assert s.created_at is not None and started - 1 <= s.created_at <= s.bound_at + 1
        assert started - 1 <= s.bound_at <= time.time() + 1
        assert started - 2 <= s.last_seen <= time.time() + 2  # expiry minus idle_timeout
        assert not s.locked
    assert await listed(world, world.user("bob")) == {key_of(bob)}
    assert await world.admin("user_sessions", world.user("carol")) == []


async def test_regenerate_moves_the_binding_to_the_new_key(world: World) -> None:
    async with world.app.client() as client:
        first = await log_in(client, world.user("alice"))
        second = await log_in(client, world.user("alice"), first)
        assert second != first
        assert await listed(world, world.user("alice")) == {key_of(second)}
        old = await world.inspect(key_of(first))
        assert old is None or old.data == RETIRED


async def test_invalidate_unlists_the_session_and_an_empty_index_goes(world: World) -> None:
    async with world.app.client() as client:
        cookie = await log_in(client, world.user("alice"))
        assert (await client.get("/logout", headers=cookie_header(cookie))).status_code == 200
    assert await listed(world, world.user("alice")) == set()
    assert await world.inspect(user_index_key(world.user("alice"))) is None


async def test_rebinding_and_unbinding_move_the_entry(world: World) -> None:
    async with world.app.client() as client:
        cookie = await log_in(client, world.user("alice"))
        await log_in(client, world.user("bob"), cookie, regenerate=False)  # same id, another user
        assert await listed(world, world.user("alice")) == set()
        assert await listed(world, world.user("bob")) == {key_of(cookie)}
        await log_in(client, "", cookie, regenerate=False)  # bind_user(None)
        assert await listed(world, world.user("bob")) == set()


# -- revoking ---------------------------------------------------------------------------


async def test_revoke_user_logs_out_everywhere_and_spares_the_others(world: World) -> None:
    async with world.app.client() as client:
        alice = [await log_in(client, world.user("alice")) for _ in range(3)]
        bob = await log_in(client, world.user("bob"))
        for cookie in (*alice, bob):
            await client.get("/inc", headers=cookie_header(cookie))
        revoked = await world.admin("revoke_user", world.user("alice"))
        assert sorted(revoked) == sorted(key_of(c) for c in alice)
        for cookie in alice:
            assert await counter(client, cookie) == "0"  # a fresh, empty session
            assert await world.inspect(key_of(cookie)) is None
        assert await counter(client, bob) == "1"
    assert sorted(e.store_key for e in world.events if e.kind == "revoked") == sorted(revoked)
    assert {e.session[USER_KEY] for e in world.events} == {world.user("alice")}
    assert await listed(world, world.user("alice")) == set()
    assert await world.admin("revoke_user", world.user("alice")) == []


async def test_a_request_holding_a_revoked_session_fails_with_409_and_cannot_resurrect_it(
    world: World,
) -> None:
    app = world.app
    async with app.client() as client:
        cookie = await log_in(client, world.user("alice"))
        await client.get("/inc", headers=cookie_header(cookie))
        holder = asyncio.create_task(client.get("/hold", headers=cookie_header(cookie)))
        await app.holding()  # its handler holds the session's lock, and changed it
        record = await world.inspect(key_of(cookie))
        assert record is not None and record.locked_until is not None
        locked = await world.admin("user_sessions", world.user("alice"))
        assert [s.locked for s in locked] == [True]
        assert await world.admin("revoke_user", world.user("alice")) == [key_of(cookie)]
        app.release()
        response = await asyncio.wait_for(holder, 10)
        assert response.status_code == 409
        assert await world.inspect(key_of(cookie)) is None
        assert await counter(client, cookie) == "0"


async def test_revoke_one_session_by_cookie_value_or_store_key(world: World) -> None:
    async with world.app.client() as client:
        one = await log_in(client, world.user("alice"))
        two = await log_in(client, world.user("alice"))
        assert await world.admin("revoke", one) is True
        assert await world.admin("revoke", key_of(two)) is True
        assert await world.admin("revoke", key_of(two)) is False
        assert await counter(client, one) == "0"
    assert await listed(world, world.user("alice")) == set()
    assert [e.kind for e in world.events] == ["revoked", "revoked"]


async def test_show_names_the_user_and_data(world: World) -> None:
    async with world.app.client() as client:
        cookie = await log_in(client, world.user("alice"))
        await client.get("/inc", headers=cookie_header(cookie))
    info = await world.admin("show", cookie)
    assert info.kind == "session" and info.user == world.user("alice")
    assert info.data == {USER_KEY: world.user("alice"), "n": 1}
    assert info.locked_until is None and info.locked_at is None and info.size > 0
    assert info.created_at is not None and info.created_at <= time.time() + 1
    index = await world.admin("show", user_index_key(world.user("alice")))
    assert index.kind == "user-index" and list(index.data["sessions"]) == [key_of(cookie)]
    assert await world.admin("show", "0" * 64) is None


async def test_stats_count_sessions_locks_indexes_and_sizes(world: World) -> None:
    app = world.app
    async with app.client() as client:
        cookies = [await log_in(client, world.user("alice")) for _ in range(2)]
        holder = asyncio.create_task(client.get("/hold", headers=cookie_header(cookies[0])))
        await app.holding()
        held_from = time.time()
        await asyncio.sleep(0.3)  # a lock at least this old
        stats = await world.admin("stats")
        held_for = time.time() - held_from
        app.release()
        await holder
    # The store may be shared with other tests (one Redis server): at least ours.
    assert stats.sessions >= 2 and stats.locked >= 1 and stats.user_indexes >= 1
    assert stats.oldest_lock is not None and stats.oldest_lock >= 0.3
    if stats.locked == 1:  # ours alone: taken just before holding() returned
        assert stats.oldest_lock <= held_for + 2.0
    assert 0 < stats.sizes["min"] <= stats.sizes["p50"] <= stats.sizes["max"]


# -- a revocation racing a login -------------------------------------------------------


async def test_a_login_whose_record_came_after_the_revocation_discards_itself(
    fresh_store: Store,
) -> None:
    """The window between a login's index entry and its create: the
    revocation finds no record and marks the entry; the login's confirm
    finds the mark and discards its new session."""
    events: list[SessionEvent] = []
    async with fresh_store:
        admin = SessionAdmin(fresh_store, on_event=events.append)
        users = admin.core.users
        alice = f"alice-{secrets.token_hex(4)}"
        key = store_key("a-login-in-flight" + alice)
        await users.add(alice, key)
        assert await admin.revoke_user(alice) == []  # nothing to discard yet
        assert key in (await users.entries(alice)).revoked
        assert await fresh_store.create(key, json.dumps({USER_KEY: alice}).encode(), ttl=60)
        assert await users.confirm(alice, key) is False
        assert await fresh_store.inspect(key) is None
        assert [e.kind for e in events] == ["revoked"]
        assert await fresh_store.inspect(user_index_key(alice)) is None


async def test_an_entry_without_a_record_is_kept_while_its_record_may_come(
    fresh_store: Store,
) -> None:
    async with fresh_store:
        admin = SessionAdmin(fresh_store)
        bob = f"bob-{secrets.token_hex(4)}"
        key = store_key("pending" + bob)
        await admin.core.users.add(bob, key)
        assert await admin.user_sessions(bob) == []
        assert key in (await admin.core.users.entries(bob)).sessions  # not pruned yet


# -- stores written before these operations ------------------------------------------


class OldStore(MemoryStore):
    """A third-party store of before discard/inspect/scan: the base defaults."""

    discard = Store.discard  # type: ignore[assignment]
    inspect = Store.inspect  # type: ignore[assignment]
    scan = Store.scan  # type: ignore[assignment]


@pytest.mark.parametrize("call", [
    lambda admin: admin.revoke("0" * 64),
    lambda admin: admin.show("0" * 64),
    lambda admin: admin.stats(),
])
async def test_a_store_without_the_operations_says_which_is_missing(
    call: Callable[[SessionAdmin], Any],
) -> None:
    admin = SessionAdmin(OldStore())
    with pytest.raises(NotImplementedError, match=r"OldStore does not implement Store\.\w+"):
        await call(admin)


async def test_a_store_without_the_operations_still_serves_sessions() -> None:
    async with serving(OldStore(), "async") as app, app.client() as client:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        assert (await client.get("/inc", headers=cookie_header(cookie))).text == "2"
