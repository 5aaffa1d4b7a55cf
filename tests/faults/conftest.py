from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.nemesis import Nemesis
from tests.faults.targets import (
    AzureTarget,
    DynamoDBTarget,
    MongoDBTarget,
    NetworkTarget,
    PostgresTarget,
    RavenDBTarget,
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
from tests.support.servers.ravendb import DATABASE, RavenServer, create_database, speak_41, warm_up
from tests.support.servers.redis import RedisServer, start_cluster


@pytest.fixture(params=["sqlite", "redis", "postgres", "azure", "mongodb", "dynamodb",
                        "ravendb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Every store that has a process of its own to kill, stall or restart."""
    if request.param == "sqlite":
        return SQLiteTarget(tmp_path)
    return server_target_of(request)


@pytest.fixture(params=["redis", "postgres", "azure", "mongodb", "dynamodb", "ravendb"])
def server_target(request: pytest.FixtureRequest) -> ServerTarget:
    """Every store with a server to restart (SQLite has none)."""
    return server_target_of(request)


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
    if request.param == "ravendb":
        ravendb: Callable[[], RavenServer] = request.getfixturevalue("ravendb_server_factory")
        return RavenDBTarget(ravendb())
    if request.param == "postgres":
        postgres: Callable[[], PostgresServer] = request.getfixturevalue(
            "postgres_server_factory")
        return PostgresTarget(postgres())
    factory: Callable[..., RedisServer] = request.getfixturevalue("redis_server_factory")
    return RedisTarget(factory(persistent=True))


def _running(server: Any, stop: str = "cleanup") -> Iterator[Any]:
    try:
        server.start()
        yield server
    finally:
        getattr(server, stop)()


# Servers of one test file's own, started when a test first asks: the fault
# suite's sessions go to the stores' default tables, which no other file sees.

@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    yield from _running(RedisServer())


@pytest.fixture(scope="module")
def own_postgres(postgres_template: Path) -> Iterator[PostgresServer]:
    yield from _running(PostgresServer(postgres_template))


@pytest.fixture(scope="module")
def own_azurite() -> Iterator[Azurite]:
    yield from _running(Azurite(), stop="remove")


@pytest.fixture(scope="module")
def own_mongodb() -> Iterator[MongoecoServer]:
    yield from _running(MongoecoServer())


@pytest.fixture(scope="module")
def own_dynamodb() -> Iterator[DynamoDBServer]:
    yield from _running(DynamoDBServer())


@pytest.fixture(scope="module")
def own_ravendb() -> Iterator[RavenServer]:
    server = RavenServer()
    try:
        server.start()
        speak_41()
        create_database(server.url, DATABASE)
        warm_up(server.url, DATABASE)
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_cluster() -> Iterator[list[RedisServer]]:
    nodes = start_cluster()
    yield nodes
    for node in nodes:
        node.cleanup()


_NETWORKED = {"redis": (RedisTarget, "own_redis"),
              "redis-cluster": (RedisClusterTarget, "private_cluster"),
              "postgres": (PostgresTarget, "own_postgres"),
              "azure": (AzureTarget, "own_azurite"),
              "mongodb": (MongoDBTarget, "own_mongodb"),
              "dynamodb": (DynamoDBTarget, "own_dynamodb"),
              "ravendb": (RavenDBTarget, "own_ravendb")}


@pytest.fixture(params=list(_NETWORKED))
def networked(request: pytest.FixtureRequest) -> Iterator[tuple[NetworkTarget, Nemesis]]:
    """Every store with a server, on the file's own server (a network fault
    harms no server; a cluster of the test's own, which learns of the
    proxies), reached through a nemesis of its own."""
    kind, fixture = _NETWORKED[request.param]
    target: NetworkTarget = kind(request.getfixturevalue(fixture))
    with Nemesis(*target.ports) as nemesis:
        yield target, nemesis
