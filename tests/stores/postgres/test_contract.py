"""The store contract on a real PostgreSQL server, straight (on the pipeline
and on psycopg's own path) and through PgBouncer in transaction mode (the
session's servers: tests/support/servers/postgres.py).
Without the listener (polling), see tests/stores/postgres/test_store.py."""

from __future__ import annotations

import secrets

import pytest

from sessionware.stores import PostgresStore, Store
from tests.support.store_contract import (
    ExactPurgeContract,
    ExactScanContract,
    StoreContract,
)


def fresh_table() -> str:
    """A table of the test's own: exact purge counts see no other test's rows."""
    return f"sessions_{secrets.token_hex(6)}"


class TestPostgresStore(StoreContract, ExactPurgeContract, ExactScanContract):
    @pytest.fixture
    def fresh_store(self, postgres_dsn: str) -> Store:
        return PostgresStore(postgres_dsn, table=fresh_table())


class TestPostgresStoreOnPsycopg(StoreContract, ExactPurgeContract, ExactScanContract):
    """Every statement through psycopg's own connections (``lean=False``), as
    the sync face always runs them."""

    @pytest.fixture
    def fresh_store(self, postgres_dsn: str) -> Store:
        return PostgresStore(postgres_dsn, table=fresh_table(), lean=False)


class TestPostgresStoreAsynchronousCommit(StoreContract, ExactPurgeContract, ExactScanContract):
    """``synchronous_commit=False``: every statement but acquire's carries
    its set_config(); the contract holds the same."""

    @pytest.fixture
    def fresh_store(self, postgres_dsn: str) -> Store:
        return PostgresStore(postgres_dsn, table=fresh_table(), synchronous_commit=False)


class TestPostgresStoreOnSeveralLeanConnections(StoreContract, ExactPurgeContract,
                                              ExactScanContract):
    """``lean_connections=3``: the statements go out over three pipelined
    connections in turn, so one operation's answer may come back before an
    earlier one's; the contract holds the same."""

    @pytest.fixture
    def fresh_store(self, postgres_dsn: str) -> Store:
        return PostgresStore(postgres_dsn, table=fresh_table(), lean_connections=3)


class TestPostgresStoreThroughPgBouncer(StoreContract, ExactPurgeContract, ExactScanContract):
    """Transaction mode: no prepared statements (PgBouncer 1.18 does not carry
    them across transactions); the listener connects straight to the server,
    as the docs say (a LISTEN does not stay with a transaction-mode client)."""

    @pytest.fixture
    def fresh_store(self, pgbouncer_dsn: str, postgres_dsn: str) -> Store:
        return PostgresStore(pgbouncer_dsn, table=fresh_table(), prepare=False,
                             listen_dsn=postgres_dsn)
