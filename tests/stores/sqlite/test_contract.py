from __future__ import annotations

from pathlib import Path

import pytest

import sessionware._async.stores.sqlite as sqlite_module
import sessionware._sync.stores.sqlite as sync_sqlite_module
from sessionware.stores import SQLiteStore, Store
from tests.support.store_contract import (
    ExactPurgeContract,
    ExactScanContract,
    StoreContract,
)


class TestSQLiteStore(StoreContract, ExactPurgeContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "sessions.db")


class TestSQLiteStoreWithoutReturning(StoreContract, ExactPurgeContract, ExactScanContract):
    """The path for SQLite 3.24 to 3.34, which has no ``UPDATE ... RETURNING``."""

    @pytest.fixture
    def fresh_store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
        for module in (sqlite_module, sync_sqlite_module):
            monkeypatch.setattr(module, "_RETURNING", False)
        return SQLiteStore(tmp_path / "sessions.db")
