"""The store contract on Azurite (Table and Blob services, tests/support/servers/azurite.py):
with data inline, and with every session's data in a blob (``inline_limit=0``)."""

from __future__ import annotations

import secrets

import pytest

from sessionware.stores import AzureTableStore, Store
from tests.support.store_contract import ExactPurgeContract, ExactScanContract, StoreContract


def fresh_names() -> dict[str, str]:
    """A table and a container of the test's own: exact purge counts and
    scans see no other test's entities."""
    suffix = secrets.token_hex(6)
    return {"table": f"sessions{suffix}", "container": f"sessions-{suffix}"}


class TestAzureTableStore(StoreContract, ExactPurgeContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, azure_connection_string: str) -> Store:
        return AzureTableStore(azure_connection_string, **fresh_names())


class TestAzureTableStoreWithBlobs(StoreContract, ExactPurgeContract, ExactScanContract):
    # every operation also moves a blob: two to four requests where the inline
    # layout makes one or two, so its steps before an expiry sleep need longer
    short = 0.6
    margin = 0.4

    @pytest.fixture
    def fresh_store(self, azure_connection_string: str) -> Store:
        return AzureTableStore(azure_connection_string, inline_limit=0, **fresh_names())
