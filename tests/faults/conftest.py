from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.nemesis import Nemesis
from tests.faults.targets import (
    AzureTarget,
    DynamoDBTarget,
    MongoDBTarget,
    NetworkTarget,
    PostgresTarget,
    RedisClusterTarget,
    RedisTarget,
    ServerTarget,
    SQLiteTarget,
    Target,
)
from tests.support.servers.azurite import Azurite
from tests.support.servers.dynamodb import DynamoDBServer
from tests.support.servers.mongodb import MongoecoServer
from tests.support.servers.postgres import PostgresServer
from tests.support.servers.redis import RedisServer, start_cluster


@pytest.fixture(params=["sqlite", "redis", "postgres", "azure", "mongodb", "dynamodb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Every store that has a process of its own to kill, stall or restart."""
    if request.param == "sqlite":
        return SQLiteTarget(tmp_path)
    return server_target_of(request)


@pytest.fixture(params=["redis", "postgres", "azure", "mongodb", "dynamodb"])
def server_target(request: pytest.FixtureRequest) -> ServerTarget:
    """Every store with a server to restart (SQLite has none)."""
    return server_target_of(request)


_SHARED = {"redis": (RedisTarget, "redis_server"),
           "redis-cluster": (RedisClusterTarget, "private_cluster"),
           "postgres": (PostgresTarget, "postgres_server"),
           "azure": (AzureTarget, "azurite"),
           "mongodb": (MongoDBTarget, "mongodb_server"),
           "dynamodb": (DynamoDBTarget, "dynamodb_server")}


def server_target_of(request: pytest.FixtureRequest) -> ServerTarget:
    if request.param == "azure":
        azurite: Callable[[], Azurite] = request.getfixturevalue("azurite_factory")
        return AzureTarget(azurite())
    if request.param == "mongodb":
        mongodb: Callable[..., MongoecoServer] = request.getfixturevalue(
            "mongodb_server_factory")
        return MongoDBTarget(mongodb(persistent=True))
    if request.param == "dynamodb":
        dynamodb: Callable[..., DynamoDBServer] = request.getfixturevalue(
            "dynamodb_server_factory")
        return DynamoDBTarget(dynamodb(persistent=True))
    if request.param == "postgres":
        postgres: Callable[[], PostgresServer] = request.getfixturevalue(
            "postgres_server_factory")
        return PostgresTarget(postgres())
    factory: Callable[..., RedisServer] = request.getfixturevalue("redis_server_factory")
    return RedisTarget(factory(persistent=True))


@pytest.fixture
def private_cluster() -> Iterator[list[RedisServer]]:
    nodes = start_cluster()
    yield nodes
    for node in nodes:
        node.cleanup()


@pytest.fixture(params=["redis", "redis-cluster", "postgres", "azure", "mongodb", "dynamodb"])
def networked(request: pytest.FixtureRequest) -> Iterator[tuple[NetworkTarget, Nemesis]]:
    """Every store with a server, on the session's shared server (a network
    fault harms no server; a cluster of its own, which learns of the
    proxies), reached through a nemesis of its own."""
    kind, fixture = _SHARED[request.param]
    target: NetworkTarget = kind(request.getfixturevalue(fixture))
    with Nemesis(*target.ports) as nemesis:
        yield target, nemesis
