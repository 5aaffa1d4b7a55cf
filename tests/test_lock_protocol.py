"""The lock protocol against a model, by Hypothesis: random interleavings of
several clients' acquire / commit / release / delete / read / create on one
session, checked step by step against what the contract says must happen, on
both faces of each store."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sessionware import LeaseLost
from sessionware.stores import Lease, Locked, MemoryStore, SQLiteStore, Store
from tests.support.faces import ThreadedStore, sync_face

T = TypeVar("T")
CLIENTS = st.integers(0, 2)
LONG = 60.0


class LockProtocol(RuleBasedStateMachine):
    make_store: Callable[[], Store]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = self.make_store()
        self.run(self.store.setup())
        self.key = secrets.token_hex(32)
        # the model: does the record exist, its data, who holds the lock
        self.exists = False
        self.data = b""
        self.holder: int | None = None
        self.current: int | None = None  # token of the live lease
        # each client's last lease, kept after it is spent: replaying stale
        # leases is the point
        self.leases: dict[int, Lease] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.store.aclose())
        self.loop.close()

    @rule(data=st.binary(max_size=8))
    def create(self, data: bytes) -> None:
        created = self.run(self.store.create(self.key, data, ttl=LONG))
        assert created == (not self.exists)
        if created:  # a new record: no lease granted so far is current for it
            self.exists, self.data, self.current = True, data, None

    @rule(client=CLIENTS)
    def acquire(self, client: int) -> None:
        got = self.run(self.store.acquire(self.key, lease_ttl=LONG))
        if not self.exists:
            assert got is None
        elif self.holder is not None:
            assert isinstance(got, Locked)
        else:
            assert isinstance(got, Lease)
            assert got.data == self.data
            assert all(got.token > old.token for old in self.leases.values())
            self.holder, self.current, self.leases[client] = client, got.token, got

    def _fenced(self, client: int, operation: Callable[[Lease], Coroutine[Any, Any, None]]
                ) -> bool:
        lease = self.leases.get(client)
        if lease is None:
            return False
        # fencing is by token: a spent lease stays current until someone else acquires
        current = self.exists and lease.token == self.current
        try:
            self.run(operation(lease))
        except LeaseLost:
            assert not current, "the current holder was refused"
            return False
        assert current, "a stale lease was obeyed"
        return True

    @rule(client=CLIENTS, data=st.binary(max_size=8))
    def commit(self, client: int, data: bytes) -> None:
        if self._fenced(client, lambda lease: self.store.commit(lease, data, ttl=LONG)):
            self.data, self.holder = data, None

    @rule(client=CLIENTS)
    def release(self, client: int) -> None:
        if self._fenced(client, lambda lease: self.store.release(lease)):
            self.holder = None

    @rule(client=CLIENTS)
    def delete(self, client: int) -> None:
        if self._fenced(client, self.store.delete):
            self.exists, self.holder = False, None

    @invariant()
    def reads_see_the_last_commit(self) -> None:
        expected = self.data if self.exists else None
        assert self.run(self.store.read(self.key)) == expected


class MemoryProtocol(LockProtocol):
    make_store = MemoryStore


class SQLiteProtocol(LockProtocol):
    folder = tempfile.mkdtemp(prefix="sessionware-protocol-")

    @staticmethod
    def make_store() -> Store:
        return SQLiteStore(Path(SQLiteProtocol.folder) / f"{secrets.token_hex(4)}.db")


def on_sync_face(machine: type[LockProtocol]) -> type[LockProtocol]:
    """``machine`` over its store's blocking twin, each call on a real thread."""
    make = machine.make_store

    def make_sync() -> Store:
        return ThreadedStore(sync_face(make()))

    return type(f"Sync{machine.__name__}", (machine,), {"make_store": staticmethod(make_sync)})


@pytest.mark.parametrize("machine", [MemoryProtocol, SQLiteProtocol])
def test_lock_protocol_matches_the_model(machine: type[LockProtocol], face: str) -> None:
    if face == "sync":
        machine = on_sync_face(machine)
    run_state_machine_as_test(
        machine, settings=settings(max_examples=60, stateful_step_count=30, deadline=None))
