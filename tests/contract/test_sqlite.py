from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sessionware.stores.sqlite as sqlite_module
from sessionware.stores import SQLiteStore, Store
from tests.contract.store_contract import ExactPurgeContract, StoreContract


class TestSQLiteStore(StoreContract, ExactPurgeContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with SQLiteStore(tmp_path / "sessions.db") as store:
            yield store


class TestSQLiteStoreWithoutReturning(StoreContract, ExactPurgeContract):
    """The path for SQLite 3.24 to 3.34, which has no ``UPDATE ... RETURNING``."""

    @pytest.fixture
    async def store(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[Store]:
        monkeypatch.setattr(sqlite_module, "_RETURNING", False)
        async with SQLiteStore(tmp_path / "sessions.db") as store:
            yield store
