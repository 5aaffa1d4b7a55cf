"""Real PostgreSQL (and PgBouncer) for the tests: throwaway clusters made with
``initdb`` and run with ``pg_ctl`` on free 127.0.0.1 ports, never the
machine's own server on 5432.

``initdb`` refuses to run as root, so as root (CI here) every server runs as
the ``postgres`` user, in a data directory it owns. One cluster is made once
per test session (``initdb`` takes a second); every server starts from a copy
of it, with ``fsync=off``.

Fixtures:

* ``postgres_server`` / ``postgres_dsn``: one server for the whole session.
* ``postgres_server_factory``: private servers for a test that stalls
  (SIGSTOP), kills (SIGKILL) or restarts one; all stopped when the test ends.
* ``pgbouncer_dsn``: PgBouncer in transaction mode in front of the session's
  server.

A missing binary fails the run (``scripts/test.sh`` installs Debian's
``postgresql`` and ``pgbouncer``): CI must never skip these tests silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
SETTINGS = ("-c fsync=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=32MB")


def postgres_binary(name: str) -> str:
    """``name`` from the newest /usr/lib/postgresql/*/bin (Debian's layout)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda path: int(Path(path).parts[-3]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(f"PostgreSQL's {name} is missing: apt-get install -y postgresql")
    return on_path


def _owner() -> str | None:
    """The user servers run as: ``postgres`` when we are root (initdb and
    PgBouncer refuse root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs a postgres user (Debian's postgresql makes it)")
    return "postgres"


def _private_dir(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    owner = _owner()
    if owner is not None:
        shutil.chown(folder, owner, owner)
    return folder


def _run(args: list[str], **options: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, user=_owner(), check=True, capture_output=True,
                          timeout=60, **options)  # type: ignore[call-overload,no-any-return]


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in (5432, 6432):
            return port


def make_template() -> Path:
    """A fresh cluster's data directory, to copy for each server."""
    folder = _private_dir("sessionware-pg-template-")
    _run([postgres_binary("initdb"), "-D", str(folder / "data"), "-U", "postgres",
          "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
    return folder / "data"


class PostgresServer:
    """One cluster on its own port: ``stop``/``start`` keep port and data;
    ``kill``, ``stall`` and ``resume`` signal every process of it."""

    def __init__(self, template: Path) -> None:
        self.port = free_port()
        self.dir = _private_dir("sessionware-pg-")
        self.data = self.dir / "data"
        _run(["cp", "-a", str(template), str(self.data)])
        self.log = self.dir / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        _run([postgres_binary("pg_ctl"), "-D", str(self.data), *args])

    def start(self) -> None:
        self._pg_ctl("-w", "-t", str(int(START_TIMEOUT)), "-l", str(self.log), "-o",
                     f"-p {self.port} -h {HOST} -k {self.dir} {SETTINGS}", "start")

    def stop(self) -> None:
        """Stop at once (``immediate``: no checkpoint; a restart recovers)."""
        if self.postmaster() is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("-w", "-m", "immediate", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def postmaster(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def processes(self) -> list[int]:
        """The postmaster and its children (PostgreSQL puts each child in a
        session of its own, so a process group does not reach them)."""
        postmaster = self.postmaster()
        if postmaster is None:
            return []
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    children.append(int(stat.split("/")[2]))
        return [postmaster, *children]

    def _signal(self, signum: signal.Signals) -> None:
        for pid in self.processes():  # the postmaster first: it forks no more
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stall(self) -> None:
        """Every process stops (SIGSTOP); connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL every process: no shutdown, no goodbye to the clients."""
        processes = self.processes()
        self._signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        # The processes may stay zombies (their parent, pg_ctl, is gone, and
        # whoever adopted them may never reap them: PID 1 here does not), and
        # a zombie still answers kill(pid, 0): the next start would take the
        # lock files for a running server's. Every process of the server is
        # dead: remove them.
        for lock in (self.data / "postmaster.pid",
                     self.dir / f".s.PGSQL.{self.port}.lock"):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def cleanup(self) -> None:
        self.resume()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class PgBouncer:
    """PgBouncer in transaction mode in front of one server."""

    def __init__(self, server: PostgresServer) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.access(binary, os.X_OK):
            pytest.fail("pgbouncer is missing: apt-get install -y pgbouncer")
        self.port = free_port()
        self.dir = _private_dir("sessionware-pgbouncer-")
        users = self.dir / "users.txt"
        users.write_text('"postgres" ""\n')
        config = self.dir / "pgbouncer.ini"
        config.write_text(f"""[databases]
* = host={HOST} port={server.port}
[pgbouncer]
listen_addr = {HOST}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = {self.dir / "pgbouncer.log"}
""")
        owner = _owner()
        if owner is not None:
            for path in (users, config):
                shutil.chown(path, owner, owner)
        self.process = subprocess.Popen([binary, str(config)], user=owner,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                log = (self.dir / "pgbouncer.log")
                raise RuntimeError(f"pgbouncer exited: {log.read_text() if log.exists() else ''}")
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                     prepare_threshold=None) as probe:
                    probe.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def cleanup(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    template = make_template()
    yield template
    shutil.rmtree(template.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(postgres_template: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_template)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.dsn


@pytest.fixture
def postgres_server_factory(postgres_template: Path
                            ) -> Iterator[Callable[[], PostgresServer]]:
    """Start private servers for one test; all stopped when the test ends."""
    servers: list[PostgresServer] = []

    def factory() -> PostgresServer:
        server = PostgresServer(postgres_template)
        servers.append(server)
        server.start()
        return server

    yield factory
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def pgbouncer_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    bouncer = PgBouncer(postgres_server)
    yield bouncer.dsn
    bouncer.cleanup()
