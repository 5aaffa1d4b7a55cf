"""Azurite, Microsoft's Azure Storage emulator, for the AzureTableStore tests:
its Table and Blob services (``azurite-table``, ``azurite-blob``, from npm,
installed into .tools/azurite by scripts/install/azurite.sh) on free
127.0.0.1 ports, each in its own process group, their data in a temporary
folder (``--location``), never touching the internet (``--disableTelemetry``).

Fixtures:

* ``azurite`` / ``azure_connection_string``: one emulator for the whole session.
* ``azurite_factory``: private emulators for a test that stalls (SIGSTOP) or
  restarts one, or (``slow_clock=True``) runs azurite-table under
  ``faketime`` at a thousandth of real time: its ETags (the write's time, to
  about 100 µs) then repeat for writes up to 100 ms apart, the gap that older
  Azurite releases have within a millisecond. All stopped when the test ends.

A missing Azurite fails the run (``scripts/test.sh`` installs it): CI must
never skip these tests silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT, ProcessGroup, free_port, wait_for_port

HOST = "127.0.0.1"
BIN = ROOT / ".tools" / "azurite" / "node_modules" / ".bin"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every installation)
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
START_TIMEOUT = 30.0
SLOW_CLOCK = "+0 x0.001"  # faketime: from now on, at a thousandth of real time
# ports Azurite and its tools would use by default: never ours
_STANDARD_PORTS = {10000, 10001, 10002}


def _port() -> int:
    while True:
        port = free_port()
        if port not in _STANDARD_PORTS:
            return port


class AzuriteService(ProcessGroup):
    """One of Azurite's services (``table`` or ``blob``) as a process group."""

    def __init__(self, service: str, folder: Path, *, slow_clock: bool = False) -> None:
        self.service = service
        self.slow_clock = slow_clock
        self.port = _port()
        self.folder = folder
        self.log = folder / f"{service}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = BIN / f"azurite-{self.service}"
        if not binary.exists():
            pytest.fail(f"Azurite is missing ({binary}): run bash scripts/install/azurite.sh")
        command = [str(binary), f"--{self.service}Host", HOST, f"--{self.service}Port",
                   str(self.port), "--location", str(self.folder), "--skipApiVersionCheck",
                   "--disableTelemetry", "--silent"]
        if self.slow_clock:
            faketime = shutil.which("faketime")
            if faketime is None:
                pytest.fail("faketime is missing: run bash scripts/install/azurite.sh")
            command = [faketime, "-f", SLOW_CLOCK, *command]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for_port(self.port, self.process, self.log, timeout=START_TIMEOUT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGCONT)  # a stalled one must see the signal
        # SIGINT: the one signal on which azurite-table saves its database
        # (it saves every 5 s otherwise, and dies on SIGTERM without saving)
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class Azurite:
    """Azurite's Table and Blob services, sharing one data folder."""

    def __init__(self, *, slow_clock: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sessionware-azurite-"))
        self.table = AzuriteService("table", self.folder, slow_clock=slow_clock)
        self.blob = AzuriteService("blob", self.folder)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"TableEndpoint=http://{HOST}:{self.table.port}/{ACCOUNT};"
                f"BlobEndpoint=http://{HOST}:{self.blob.port}/{ACCOUNT};")

    def start(self) -> None:
        self.table.start()
        self.blob.start()

    def stop(self) -> None:
        self.table.stop()
        self.blob.stop()

    def stall(self) -> None:
        """SIGSTOP both services: connections stay open, nothing answers."""
        self.table.stall()
        self.blob.stall()

    def resume(self) -> None:
        self.table.resume()
        self.blob.resume()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def azure_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def azurite_factory() -> Iterator[Callable[..., Azurite]]:
    started: list[Azurite] = []

    def make(*, slow_clock: bool = False) -> Azurite:
        server = Azurite(slow_clock=slow_clock)
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.remove()
