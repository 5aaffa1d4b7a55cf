"""What the fault suite needs of a store: a real process to stall and,
where the store has a server, one to restart.

Each target gives a store for the in-process app, a spec for apps started in
other processes (``tests/support/apps/stores.py``), and faults done to real processes:

* ``stalled()``: the store stops answering without closing anything, as a
  server does under SIGSTOP, and answers again at the end of the block.
  Redis: the server process is SIGSTOPped. SQLite has no server: another
  process holds the database's write lock and is SIGSTOPped, so every write
  waits for it, as all of a host's workers do when one of them stalls.
  PostgreSQL: every process of the server is SIGSTOPped.
* a restart (``RedisTarget.server``): the server stops (SIGTERM) and starts
  again on its port, keeping its data (an fsynced append-only file).
  PostgreSQL (``PostgresTarget.server``): every process of the server is
  SIGKILLed, with no goodbye to its clients, and it starts again on its port
  (crash recovery from its WAL). SQLite has no server to restart, so it has
  no restart target. Azure (Azurite): both services are SIGSTOPped for a
  stall; a restart stops them and starts them again on their ports and data
  folder. MongoDB (``MongoDBTarget.server``): the mongoeco emulator's process
  is SIGKILLed and starts again on its port, its documents kept in a SQLite
  file (mongoeco's SQLite engine). DynamoDB Local (``DynamoDBTarget.server``):
  its JVM is SIGKILLed and started again on its port, its tables kept in a
  file (``-dbPath``). RavenDB (``RavenDBTarget.server``): its process group
  is SIGKILLed and started again on its ports, its documents kept on disk
  (Voron's journal).

A server target's ``store(via)`` reaches the server through other ports
(``{server port: proxy port}``): the nemesis of ``nemesis.py`` stands there
for the network's faults (``test_network.py``); ``ports`` are the server's.

MemoryStore lives in the test process itself, so no other process can stall
or kill it: it is not a target (its contract and middleware suites cover it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sessionware.stores import (
    AzureTableStore,
    DynamoDBStore,
    MongoDBStore,
    PostgresStore,
    RavenDBStore,
    RedisStore,
    SQLiteStore,
    Store,
)
from tests.support.servers.azurite import Azurite
from tests.support.servers.dynamodb import DynamoDBServer, store_options
from tests.support.servers.mongodb import MongoecoServer
from tests.support.servers.postgres import PostgresServer
from tests.support.servers.ravendb import DATABASE as RAVENDB_DATABASE
from tests.support.servers.ravendb import RavenServer
from tests.support.servers.redis import RedisServer

# A writer that takes the database's write lock, says so, and keeps it until
# its standard input closes: then it rolls back and exits.
_LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def through(address: str, via: Mapping[int, int] | None) -> str:
    """``address`` with each server port of it replaced by the port ``via`` maps it to."""
    for port, proxy in (via or {}).items():
        address = re.sub(rf":{port}(?=[/;?]|$)", f":{proxy}", address)
    return address


class SQLiteTarget:
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "sessions.db"

    @property
    def spec(self) -> str:
        return f"sqlite:{self.path}"

    def store(self) -> Store:
        return SQLiteStore(self.path)

    def refuses_when_stalled(self, face: str) -> bool:
        """Whether a write the stall holds up fails as known not applied: on
        the sync face, SQLite's own wait for the write lock is bounded by the
        store call's time left, and it gives up before it wrote anything. The
        async face stops waiting for its worker thread instead: unknown."""
        return face == "sync"

    @contextmanager
    def stalled(self) -> Iterator[None]:
        holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(self.path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"locked\n"
            os.kill(holder.pid, signal.SIGSTOP)
            yield
        finally:
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()


class RedisTarget:
    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def spec(self) -> str:
        return f"redis:{self.server.url}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.server.port,)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return RedisStore(through(self.server.url, via), socket_timeout=5.0)

    def refuses_when_stalled(self, face: str) -> bool:
        """A command sent to a stalled server may run when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        process = self.server.process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(process.pid, signal.SIGCONT)


class RedisClusterTarget:
    """A Redis Cluster of its own, for the network's faults only. Through a
    nemesis, each node announces its proxy's port (``cluster-announce-port``),
    so that the topology and redirections a cluster client follows lead it
    through the proxies too."""

    name = "redis-cluster"
    # the sync face's calls on redis-py's path (a cluster's) are bounded by
    # socket_timeout alone, not by store_timeout: keep it short
    socket_timeout = 1.0

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def spec(self) -> str:
        return f"redis-cluster:{self.nodes[0].url}"

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(node.port for node in self.nodes)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        if via:
            self._announce(via)
        return RedisStore(through(self.nodes[0].url, via), cluster=True,
                          socket_timeout=self.socket_timeout)

    def _announce(self, via: Mapping[int, int]) -> None:
        for node in self.nodes:
            with node.client() as admin:
                admin.config_set("cluster-announce-port", via[node.port])
        deadline = time.monotonic() + 10
        while not all(self._sees(node, via) for node in self.nodes):  # gossip spreads it
            assert time.monotonic() < deadline, "the nodes did not hear of the proxies"
            time.sleep(0.05)

    @staticmethod
    def _sees(node: RedisServer, via: Mapping[int, int]) -> bool:
        with node.client() as probe:
            slots = probe.execute_command("CLUSTER SLOTS")
        return {int(shard[2][1]) for shard in slots} == set(via.values())


class _Crashing:
    """A PostgreSQL server whose ``stop`` is a crash (SIGKILL of every process)."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.kill()

    def start(self) -> None:
        self._server.start()


class PostgresTarget:
    name = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.postgres = server
        self.server = _Crashing(server)

    @property
    def spec(self) -> str:
        return f"postgres:{self.postgres.dsn}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.postgres.port,)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return PostgresStore(through(self.postgres.dsn, via), timeout=5.0)

    def refuses_when_stalled(self, face: str) -> bool:
        """A statement sent to a stalled server may run when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self.postgres.stall()
        try:
            yield
        finally:
            self.postgres.resume()


class AzureTarget:
    name = "azure"

    def __init__(self, server: Azurite) -> None:
        self.azurite = server
        self.server = server

    @property
    def spec(self) -> str:
        return f"azure:{self.azurite.connection_string}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.azurite.table.port, self.azurite.blob.port)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return AzureTableStore(through(self.azurite.connection_string, via), timeout=5.0)

    def refuses_when_stalled(self, face: str) -> bool:
        """A request sent to a stalled service may be applied when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self.azurite.stall()
        try:
            yield
        finally:
            self.azurite.resume()


class _CrashingEmulator:
    """A mongoeco server whose ``stop`` is a crash (SIGKILL)."""

    def __init__(self, server: MongoecoServer) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.kill()

    def start(self) -> None:
        self._server.start()


class MongoDBTarget:
    name = "mongodb"

    def __init__(self, server: MongoecoServer) -> None:
        self.mongodb = server
        self.server = _CrashingEmulator(server)

    @property
    def spec(self) -> str:
        return f"mongodb:{self.mongodb.url}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.mongodb.port,)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return MongoDBStore(through(self.mongodb.url, via), timeout=5.0)

    def refuses_when_stalled(self, face: str) -> bool:
        """A command sent to a stalled server may run when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self.mongodb.stall()
        try:
            yield
        finally:
            self.mongodb.resume()


class _Killed:
    """A server whose ``stop`` is a crash (SIGKILL of its process: DynamoDB
    Local's JVM, RavenDB's .NET process group)."""

    def __init__(self, server: DynamoDBServer | RavenServer) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.kill()

    def start(self) -> None:
        self._server.start()


class DynamoDBTarget:
    name = "dynamodb"

    def __init__(self, server: DynamoDBServer) -> None:
        self.dynamodb = server
        self.server = _Killed(server)

    @property
    def spec(self) -> str:
        return f"dynamodb:{self.dynamodb.endpoint}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.dynamodb.port,)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return DynamoDBStore(timeout=5.0, **store_options(through(self.dynamodb.endpoint, via)))

    def refuses_when_stalled(self, face: str) -> bool:
        """A request sent to a stalled server may run when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self.dynamodb.stall()
        try:
            yield
        finally:
            self.dynamodb.resume()


class RavenDBTarget:
    name = "ravendb"

    def __init__(self, server: RavenServer) -> None:
        self.ravendb = server
        self.server = _Killed(server)

    @property
    def spec(self) -> str:
        return f"ravendb-4.1:{self.ravendb.url}/{RAVENDB_DATABASE}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.ravendb.port,)

    def store(self, via: Mapping[int, int] | None = None) -> Store:
        return RavenDBStore(through(self.ravendb.url, via), RAVENDB_DATABASE, timeout=5.0)

    def refuses_when_stalled(self, face: str) -> bool:
        """A request sent to a stalled server may run when it resumes: unknown."""
        return False

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self.ravendb.stall()
        try:
            yield
        finally:
            self.ravendb.resume()


Target = (SQLiteTarget | RedisTarget | PostgresTarget | AzureTarget | MongoDBTarget
          | DynamoDBTarget | RavenDBTarget)
ServerTarget = (RedisTarget | PostgresTarget | AzureTarget | MongoDBTarget | DynamoDBTarget
                | RavenDBTarget)
NetworkTarget = ServerTarget | RedisClusterTarget
