"""Start real server processes (uvicorn, gunicorn, waitress, ...) on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path,
                  timeout: float = 20.0) -> None:
    """Until the port accepts connections; fail at once if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ProcessGroup:
    """A test server started in a session of its own (``start_new_session=True``)
    and signalled as a whole group, so that its children stop, resume and die
    with it. ``process`` is ``None`` while it is not running."""

    process: subprocess.Popen[bytes] | None

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the whole group, if it still runs."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    def stall(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the group: no shutdown, no goodbye to the clients."""
        process = self.process
        if process is not None:
            self.signal(signal.SIGKILL)
            process.wait(10)
            self.process = None


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup code runs anywhere."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT) to the whole process group."""
        os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def serve(command: Sequence[str], env: Mapping[str, str], port: int | None = None
          ) -> Iterator[Server]:
    """Run ``command`` (with ``{port}`` filled in) in its own process group.

    Output goes to a file, not a pipe: a pipe nobody reads fills up and then
    blocks the server mid-request."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="sessionware-server-") as folder:
        log = Path(folder) / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [part.format(port=port) for part in command], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(process, port, log)
        try:
            wait_for_port(port, process, log)
            yield server
        finally:
            server.stop()


def uvicorn(app: str, *, workers: int = 1, factory: bool = True) -> list[str]:
    """uvicorn serving ``app``: ``module:factory`` that makes the ASGI app,
    or ``module:application`` itself with ``factory=False``."""
    return [sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []),
            "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers),
            "--log-level", "warning"]


def gunicorn(app: str, *options: str) -> list[str]:
    """gunicorn serving the WSGI app ``app`` (``module:callable()``)."""
    return [sys.executable, "-m", "gunicorn", app, "--bind", "127.0.0.1:{port}",
            "--log-level", "warning", *options]
