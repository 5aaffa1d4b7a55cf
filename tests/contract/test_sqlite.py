from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionware.stores import SQLiteStore, Store
from tests.contract.store_contract import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with SQLiteStore(tmp_path / "sessions.db") as store:
            yield store
