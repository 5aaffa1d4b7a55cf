"""The store contract on a real DynamoDB Local (tests/support/servers/dynamodb.py),
each test on a table of its own.

DynamoDB Local runs the table's TTL, and deletes expired items within about a
second (real DynamoDB takes up to days), so on a table set up by the store
``purge_expired`` cannot count exactly. On a table made without TTL (as
infrastructure as code may), expired items stay until purged: there every
operation's own expiry check is what the contract sees, and purges count
exactly."""

from __future__ import annotations

import secrets

import botocore.session
import pytest

from sessionware.stores import DynamoDBStore, Store
from tests.support.servers.dynamodb import store_options
from tests.support.store_contract import (
    ExactPurgeContract,
    ExactScanContract,
    StoreContract,
)


def fresh_table() -> str:
    return f"sessions_{secrets.token_hex(6)}"


def table_without_ttl(endpoint: str) -> str:
    """A table as the docs specify it, with TTL left off."""
    name = fresh_table()
    client = botocore.session.get_session().create_client("dynamodb", **store_options(endpoint))
    try:
        client.create_table(
            TableName=name, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}])
    finally:
        client.close()
    return name


class TestDynamoDBStore(StoreContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, dynamodb_endpoint: str) -> Store:
        return DynamoDBStore(fresh_table(), **store_options(dynamodb_endpoint))


class TestDynamoDBStoreWithoutTTL(StoreContract, ExactPurgeContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, dynamodb_endpoint: str) -> Store:
        return DynamoDBStore(table_without_ttl(dynamodb_endpoint), create_table=False,
                             **store_options(dynamodb_endpoint))
