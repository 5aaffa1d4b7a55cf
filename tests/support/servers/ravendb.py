"""RavenDB for the tests: a real RavenDB 4.1.0 server (build 41001) on the .NET 8
runtime, installed by ``scripts/install/ravendb.sh`` into ``.tools/ravendb/``
(see there, and docs/stores/ravendb.md for what it works around), started on
free 127.0.0.1 ports, never a server on a standard port.

It is ready at its console line ``Server started`` (``/build/version`` answers
earlier, and requests sent then fail). Its ``--Embedded.ParentProcessId`` did not
stop it when its parent died, so each server here runs in a process group of its
own, which the fixture kills. Its control sockets go to ``TMPDIR``, inside its
own folder.

A 4.1 server wraps every error for a client of another major version as
``ClientVersionMismatchException`` (HTTP 503): the tests (only they, never the
library) make the client say it is 4.1.0 while they talk to this server.
``CreateDatabaseOperation``'s reply from it fails to parse (``KeyError:
'PriorityOrder'``) although the database is made: :func:`create_database`
tolerates exactly that.

When ``RAVENDB_URL`` names a server (a modern one), every suite runs against it
instead, and the client keeps its own version.

Fixtures:

* ``ravendb``: a :class:`RavenTarget`: the URL and the session's two databases,
  one swept (expiration configured by the stores' setup) and one never swept.
* ``ravendb_server``: the session's server (not with ``RAVENDB_URL``).
* ``ravendb_server_factory``: private servers for a test that stalls (SIGSTOP),
  kills (SIGKILL) or restarts one (its data is on disk: a restart keeps it).

A missing server fails the run: CI must never skip these silently.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessionware.stores import Lease
from tests.support.processes import ProcessGroup, free_port
from tests.support.servers.dynamodb import RequestCounter

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
TOOLS = ROOT / ".tools" / "ravendb"
START_TIMEOUT = 60.0  # about 2 s alone; much more on 2 cores busy with other suites
READY = b"Server started"
CLIENT_VERSION = "4.1.0"  # what the client tells a 4.1 server it is
DATABASE = "sessionware"  # the database of each server of ravendb_server_factory


def own_version() -> str:
    """The version the RavenDB client says it is, before :func:`speak_41`."""
    from ravendb.http.request_executor import RequestExecutor

    return _OWN_VERSION.setdefault("version", RequestExecutor.CLIENT_VERSION)


def speak_41() -> None:
    """Have this process's RavenDB client present itself as 4.1.0."""
    from ravendb.http.request_executor import RequestExecutor

    own_version()
    RequestExecutor.CLIENT_VERSION = CLIENT_VERSION


_OWN_VERSION: dict[str, str] = {}


class RavenServer(ProcessGroup):
    """One RavenDB 4.1 process in a process group of its own; ``kill`` and
    ``start`` keep its ports and its data."""

    def __init__(self) -> None:
        dotnet = TOOLS / "dotnet" / "dotnet"
        if not os.access(dotnet, os.X_OK) or not (TOOLS / "server" / "Raven.Server.dll").exists():
            pytest.fail(f"RavenDB is missing ({TOOLS}): bash scripts/install/ravendb.sh")
        self.dotnet = dotnet
        self.port, self.tcp_port = free_port(), free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sessionware-ravendb-"))
        self.log = self.dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        assert self.process is None, "already running"
        (self.dir / "tmp").mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.dir / "tmp"),
               "DOTNET_ROOT": str(self.dotnet.parent), "DOTNET_ROLL_FORWARD": "Major",
               "DOTNET_CLI_TELEMETRY_OPTOUT": "1"}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(self.dotnet), "Raven.Server.dll", f"--ServerUrl={self.url}",
                 f"--ServerUrl.Tcp=tcp://{HOST}:{self.tcp_port}", "--Setup.Mode=None",
                 "--License.Eula.Accepted=true", "--Security.UnsecuredAccessAllowed=Local",
                 f"--DataDir={self.dir / 'data'}", f"--Logs.Path={self.dir / 'logs'}",
                 # read as empty, which .NET 3 and later refuse to parse
                 "--ETL.SQL.CommandTimeoutInSec=30", "--non-interactive"],
                cwd=TOOLS / "server", env=env, stdout=output, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(offset)

    def _wait_ready(self, offset: int) -> None:
        """Until the console says ``Server started`` after ``offset``; fail at
        once if the server exits."""
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in self.log.read_bytes()[offset:]:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"RavenDB exited:\n{self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"RavenDB did not start within {START_TIMEOUT}s")
            time.sleep(0.05)

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(url: str, name: str) -> None:
    """Create the database ``name`` on the server at ``url``."""
    from ravendb import DocumentStore
    from ravendb.serverwide.database_record import DatabaseRecord
    from ravendb.serverwide.operations.common import CreateDatabaseOperation

    store = DocumentStore([url], name)
    store.initialize()
    try:
        store.maintenance.server.send(CreateDatabaseOperation(DatabaseRecord(name)))
    except KeyError as exc:  # a 4.1 server's reply lacks what the client parses
        if exc.args != ("PriorityOrder",):
            raise
    finally:
        store.close()


def warm_up(url: str, database: str) -> None:
    """Run every kind of request once on ``database``: a fresh server takes a
    second or more over its first expiration set-up and first scripts, past
    the short ``store_timeout`` of the fault tests, which are about faults,
    not about a cold start."""
    from sessionware.stores import RavenDBStore

    with RavenDBStore(url, database, collection="WarmUp", sweep_every=1).sync() as store:
        for key in ("a", "b"):
            store.create(key, b"{}", ttl=60)
            lease = store.acquire(key, lease_ttl=10)
            assert isinstance(lease, Lease), lease
            store.renew(lease, lease_ttl=10)
            store.commit(lease, b"{}", ttl=60)
            store.read(key, ttl=120)
            lease = store.acquire(key, lease_ttl=10)
            assert isinstance(lease, Lease), lease
            store.release(lease, ttl=60)
            store.discard(key)


def delete_databases(url: str, names: list[str]) -> None:
    """Delete the databases ``names`` from the server at ``url``, at once."""
    from ravendb import DocumentStore
    from ravendb.serverwide.operations.common import DeleteDatabaseOperation

    store = DocumentStore([url], names[0])
    store.initialize()
    try:
        store.maintenance.server.send(DeleteDatabaseOperation(parameters=(
            DeleteDatabaseOperation.Parameters(database_names=names, hard_delete=True))))
    finally:
        store.close()


@dataclass
class RavenTarget:
    """Where a suite runs: a server, and this session's databases on it."""

    url: str
    swept: str  # the stores set expiration up here
    unswept: str  # no store here configures expiration: expired documents stay
    modern: bool  # RAVENDB_URL's server, not the 4.1 one

    def spec(self) -> str:
        """The swept database's default collection, for an app in another process
        (tests/support/apps/stores.py)."""
        return f"ravendb{'' if self.modern else '-4.1'}:{self.url}/{self.swept}"

    @staticmethod
    def collection() -> str:
        """A collection of the test's own: exact counts see no other test's documents."""
        return f"S{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def ravendb() -> Iterator[RavenTarget]:
    url = os.environ.get("RAVENDB_URL")
    server = None
    if url is None:
        server = RavenServer()
        server.start()
        url = server.url
        speak_41()
    try:
        run = secrets.token_hex(4)
        target = RavenTarget(url, f"sessionware_{run}", f"sessionware_{run}_unswept",
                             modern=server is None)
        create_database(url, target.swept)
        create_database(url, target.unswept)
        yield target
        if server is None:  # RAVENDB_URL's server outlives the run: its databases go
            delete_databases(url, [target.swept, target.unswept])
    finally:
        if server is not None:
            server.cleanup()


@pytest.fixture
def ravendb_server_factory() -> Iterator[Callable[[], RavenServer]]:
    """Start private 4.1 servers for one test, each with the database
    :data:`DATABASE`, warmed up; all killed when the test ends."""
    servers: list[RavenServer] = []

    def factory() -> RavenServer:
        server = RavenServer()
        servers.append(server)
        server.start()
        speak_41()
        create_database(server.url, DATABASE)
        warm_up(server.url, DATABASE)
        return server

    yield factory
    for server in servers:
        server.cleanup()


class HTTPRequestCounter(RequestCounter):
    """A loopback TCP proxy in front of a RavenDB server that records each
    request a client sends as its method and its path's last part
    (``PATCH docs``, ``GET docs``): what goes on the wire."""

    def _count(self, buffer: bytes) -> bytes:
        start = 0
        for found in _REQUEST_LINE.finditer(buffer):
            method, path = found.group(1).decode(), found.group(2).decode()
            self.operations.append(f"{method} {path.partition('?')[0].rpartition('/')[2]}")
            start = found.end()
        return buffer[max(start, len(buffer) - _LONGEST_LINE):]


_REQUEST_LINE = re.compile(rb"(GET|PATCH|PUT|POST|DELETE|HEAD) (/[^ \r\n]*) HTTP/1\.[01]\r\n")
_LONGEST_LINE = 4096  # a request line cut by a chunk's end is found in the next
