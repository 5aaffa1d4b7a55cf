"""MongoDB for the tests: the mongoeco emulator's wire server (no real
``mongod`` can be installed on these machines), started on a free 127.0.0.1
port as a subprocess of its own interpreter (``.tools/mongoeco-venv``, made by
``scripts/install/mongoeco.sh``: mongoeco needs Python >= 3.13), and stopped
by its process group. pymongo connects with ``directConnection=true``.

When ``MONGODB_URL`` names a real server, every suite that asks for
``mongodb`` runs against it as well (target ``real``; without it there is no
such target). The emulator is never skipped: a missing one
fails the run.

What the emulator does otherwise than MongoDB, and the tests branch on
(:attr:`MongoTarget.emulated`), each by name:

* ``EXPIRED_VANISH``: a document past its TTL index's date is gone at once
  (MongoDB's TTL monitor deletes it within about a minute), so
  ``purge_expired`` finds nothing left to count;
* ``NO_CHANGE_STREAMS``: ``hello`` names no replica set and ``$changeStream``
  is refused, so waiters of other processes poll.
* ``FIRST_BATCH_WHOLE``: a ``find`` without ``batchSize`` answers every
  document it matches in its first reply (MongoDB: 101, the rest by
  ``getMore``), so round trips counted here cannot see a missing batch size;
* ``IN_MEMORY``: a restarted server starts empty, unless it keeps its
  documents in a file (``MongoecoServer(persistent=True)``: mongoeco's SQLite
  engine).

Fixtures:

* ``mongodb``: the targets, one per test parameter (``mongoeco``, ``real``).
* ``mongodb_server`` / ``mongodb_url``: the session's emulator.
* ``mongodb_server_factory``: private emulators for a test that stalls
  (SIGSTOP), kills (SIGKILL) or restarts one; all stopped when the test ends.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ProcessGroup

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
PYTHON = ROOT / ".tools" / "mongoeco-venv" / "bin" / "python"
LAUNCHER = Path(__file__).parent.parent / "mongoeco_server.py"
START_TIMEOUT = 30.0

EXPIRED_VANISH = "mongoeco deletes a document at its TTL date at once (mongod: within ~60 s)"
NO_CHANGE_STREAMS = "mongoeco is a standalone server without change streams"
FIRST_BATCH_WHOLE = ("mongoeco answers a whole find in its first reply "
                     "(mongod: 101 documents unless told a batchSize)")
IN_MEMORY = "mongoeco keeps its data in memory: a restart starts empty"


class MongoecoServer(ProcessGroup):
    """One emulator process in a process group of its own; ``stop`` and
    ``start`` keep its port."""

    def __init__(self, *, persistent: bool = False) -> None:
        if not os.access(PYTHON, os.X_OK):
            pytest.fail(f"mongoeco is missing ({PYTHON}): bash scripts/install/mongoeco.sh")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="sessionware-mongoeco-"))
        self.data = [str(self.dir / "data.sqlite")] if persistent else []

    @property
    def url(self) -> str:
        return f"mongodb://{HOST}:{self.port}/?directConnection=true"

    def start(self) -> None:
        assert self.process is None, "already running"
        process = self.process = subprocess.Popen(
            [str(PYTHON), str(LAUNCHER), str(self.port), *self.data], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        output = b""
        while b"\n" not in output:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                self.kill()
                raise RuntimeError(f"mongoeco did not start within {START_TIMEOUT}s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"mongoeco exited: {output.decode(errors='replace')}")
            output += chunk
        line = output.split(b"\n")[0].decode()
        if not line.startswith("ready "):
            self.kill()
            raise RuntimeError(f"mongoeco said {output.decode(errors='replace')!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            process.wait()
        self._closed(process)

    def kill(self) -> None:
        process = self.process
        super().kill()
        if process is not None:
            self._closed(process)

    def _closed(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdout is not None:
            process.stdout.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class MongoTarget:
    """Where a suite runs: the emulator, or the real server of MONGODB_URL."""

    name: str
    url: str
    emulated: bool

    def database(self) -> str:
        """A database of the test's own: exact counts see no other test's
        documents."""
        return f"sessionware_test_{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[MongoecoServer]:
    server = MongoecoServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def mongodb_url(mongodb_server: MongoecoServer) -> str:
    return mongodb_server.url


# the real target only when there is one (no skip line per test without it)
TARGETS = ["mongoeco", *(["real"] if os.environ.get("MONGODB_URL") else [])]


@pytest.fixture(params=TARGETS)
def mongodb(request: pytest.FixtureRequest) -> MongoTarget:
    if request.param == "real":
        return MongoTarget("real", os.environ["MONGODB_URL"], emulated=False)
    url = request.getfixturevalue("mongodb_url")
    return MongoTarget("mongoeco", url, emulated=True)


@pytest.fixture
def mongodb_server_factory() -> Iterator[Callable[..., MongoecoServer]]:
    """Start private emulators for one test (``persistent=True``: kept in a
    file, across a restart); all stopped when the test ends."""
    servers: list[MongoecoServer] = []

    def factory(*, persistent: bool = False) -> MongoecoServer:
        server = MongoecoServer(persistent=persistent)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.cleanup()
