"""The public surface: complete, sorted, documented, and light to import."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest

import sessionware
import sessionware.stores
from sessionware import LockTimeout, SessionConfig
from sessionware._sync.core import SyncSessionCore
from sessionware.cookies import new_session_id, store_key
from sessionware.stores import Lease, Locked, SyncMemoryStore


@pytest.mark.parametrize("module", [sessionware, sessionware.stores])
def test_all_is_sorted_and_complete(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("name", [n for n in sessionware.__all__ if not n.startswith("_")])
def test_public_names_are_documented(name: str) -> None:
    obj = getattr(sessionware, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_optional_drivers_are_not_imported_by_the_package() -> None:
    code = ("import sys, sessionware, sessionware.stores; "
            "print(sorted(m for m in ('redis', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- one store API, two faces ---------------------------------------------------------

class PublicTypesStore(SyncMemoryStore):
    """A sync store written against the public API, as a third-party store
    would be: ``from sessionware.stores import Lease, Locked, SyncStore``."""

    def acquire(self, key: str, *, lease_ttl: float) -> Any:
        got = super().acquire(key, lease_ttl=lease_ttl)
        if got is None:
            return None
        if hasattr(got, "retry_after"):
            return Locked(got.retry_after)
        return Lease(got.key, got.token, got.data)


def test_a_sync_store_answering_with_the_public_locked_is_waited_for() -> None:
    """The sync core tells a refusal from a lease by its class: the ``Locked``
    a sync store can import must be the one the sync core knows."""
    store = PublicTypesStore()
    key = store_key(new_session_id())
    assert store.create(key, b"{}", ttl=60)
    assert isinstance(store.acquire(key, lease_ttl=60), Lease)  # someone holds it
    core = SyncSessionCore(store, "k" * 32, config=SessionConfig(lock_timeout=0.2))
    with pytest.raises(LockTimeout):
        core.lock(key)


def test_both_faces_share_the_lease_types() -> None:
    from sessionware._sync.stores import base as sync_base

    assert sync_base.Lease is sessionware.stores.Lease
    assert sync_base.Locked is sessionware.stores.Locked
