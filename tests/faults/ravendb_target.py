"""The fault suite's RavenDB target (see tests/faults/targets.py for what a
target is): a real RavenDB 4.1 server of the test's own
(``ravendb_server_factory``), its database warmed up. A stall SIGSTOPs its
process group; a restart (``RavenDBTarget.server``) SIGKILLs it, with no
goodbye to its clients, and starts it again on its ports, its documents kept
on disk (Voron's journal)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sessionware.stores import RavenDBStore, Store
from tests.support.servers.ravendb import DATABASE, RavenServer


class _Killed:
    """A RavenDB server whose ``stop`` is a crash (SIGKILL)."""

    def __init__(self, server: RavenServer) -> None:
        self._server = server

    def stop(self) -> None:
        self._server.kill()

    def start(self) -> None:
        self._server.start()


class RavenDBTarget:
    name = "ravendb"

    def __init__(self, server: RavenServer) -> None:
        self.ravendb = server
        self.server = _Killed(server)

    @property
    def spec(self) -> str:
        return f"ravendb-4.1:{self.ravendb.url}/{DATABASE}"

    def store(self) -> Store:
        return RavenDBStore(self.ravendb.url, DATABASE, timeout=5.0)

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
