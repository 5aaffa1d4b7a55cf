"""The nemesis: a TCP proxy of the tests' own between a store's client and
its server, which the test tells to pass, delay, lose, partition or black-hole
the traffic, and to heal.

Why a proxy and not the kernel: ``tc netem`` (delay, loss) needs the
``sch_netem`` module, which CI machines do not load, and a network namespace
of the tests' own would need root for every test. A proxy on a free loopback
port runs anywhere, needs nothing, and is driven from the test itself. What it
can and cannot do, by fault:

* **latency** (:meth:`Nemesis.delay`): every chunk of bytes is held
  ``mean ± jitter`` seconds, each way, in order (a later chunk never overtakes
  an earlier one, as on a real link); the TCP handshake itself is not delayed
  (the client's connect completes against the proxy);
* **loss** (:meth:`Nemesis.lose`): TCP never loses bytes, it retransmits them;
  what a client sees of a lost packet is a retransmission timeout (200 ms at
  least on Linux, more when it repeats). So a "lost" chunk is held 200-1000 ms,
  and everything behind it waits too (head-of-line blocking);
* **partition** (:meth:`Nemesis.partition`): nothing is forwarded either way
  and no socket is closed (no RST, no FIN); what was sent meanwhile arrives
  once :meth:`Nemesis.heal` is called, as TCP's retransmissions would deliver
  it. A connection opened during the partition is accepted (loopback cannot
  drop a SYN) but answered nothing until the heal;
* **black hole** (:meth:`Nemesis.black_hole`): every connection open now, or
  opened until the heal, is dead for good: its bytes are dropped and it is
  never closed, as when a firewall or NAT forgets a flow. After the heal,
  only new connections work: a client recovers only if it drops the dead ones.

:meth:`Nemesis.redirect` moves the upstream (a failover behind a virtual
address): new connections reach the new server, old ones stay where they are.

The proxy runs its own event loop on a thread, so it keeps forwarding whatever
the test's loop or the app's threads do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

HOST = "127.0.0.1"
RETRANSMIT = (0.2, 1.0)  # what a lost packet costs: one retransmission timeout or a few
T = TypeVar("T")


@dataclass
class _Link:
    """One proxied connection: its two sockets and the due time of the last
    chunk each way (a later chunk is never due before it)."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    dead: bool = False
    last_due: dict[str, float] = field(default_factory=dict)


class Nemesis:
    """A proxy in front of each ``HOST:upstream`` (Azurite has two: Table and
    Blob), all under the same faults; clients dial ``via[upstream]``.

    Use as a context manager (or :meth:`start` and :meth:`close`)."""

    def __init__(self, *upstreams: int, seed: int = 27) -> None:
        self.via: dict[int, int] = {}  # server port: the port clients dial instead
        self._upstreams = list(upstreams)
        self._to: dict[int, int] = {}  # listening port: the server port it reaches
        self._random = random.Random(seed)
        self._mean = self._jitter = self._loss = 0.0
        self._holing = False
        self._links: list[_Link] = []
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nemesis",
                                        daemon=True)
        self._servers: list[asyncio.Server] = []

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Nemesis:
        self._thread.start()
        for upstream in self._upstreams:
            server = self._call(asyncio.start_server(self._accept, HOST, 0))
            port = int(server.sockets[0].getsockname()[1])
            self._servers.append(server)
            self.via[upstream], self._to[port] = port, upstream
        self._loop.call_soon_threadsafe(self._flowing.set)
        return self

    def close(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Nemesis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- faults, told from any thread -----------------------------------------

    def delay(self, mean: float, jitter: float = 0.0) -> None:
        """Hold every chunk ``mean ± jitter`` seconds, each way."""
        self._mean, self._jitter = mean, jitter

    def lose(self, rate: float) -> None:
        """Lose ``rate`` of the chunks: each such chunk waits for a
        retransmission (:data:`RETRANSMIT`), and what follows it too."""
        self._loss = rate

    def partition(self) -> None:
        """Forward nothing, close nothing, until :meth:`heal`."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def black_hole(self) -> None:
        """Every connection open now or opened until :meth:`heal` is dead for good."""
        self._holing = True
        for link in list(self._links):
            link.dead = True

    def redirect(self, upstream: int, to: int) -> None:
        """New connections meant for ``upstream`` reach ``HOST:to`` from now on."""
        self._to[self.via[upstream]] = to

    def heal(self) -> None:
        """Back to a clean network: no delay, no loss, forwarding again (what
        a partition held is delivered now; black-holed connections stay dead)."""
        self._mean = self._jitter = self._loss = 0.0
        self._holing = False
        self._loop.call_soon_threadsafe(self._flowing.set)

    @contextmanager
    def partitioned(self) -> Iterator[None]:
        self.partition()
        try:
            yield
        finally:
            self.heal()

    # -- the proxy ------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for link in self._links:
            for writer in link.writers:
                writer.close()
        self._links.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        # cancelled when the nemesis closes: a cancelled callback task is logged as an error
        with contextlib.suppress(asyncio.CancelledError):
            await self._proxy(client_r, client_w)

    async def _proxy(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        link = _Link(writers=[client_w], dead=self._holing)
        self._links.append(link)
        upstream = self._to[client_w.get_extra_info("sockname")[1]]
        try:
            server_r, server_w = await asyncio.open_connection(HOST, upstream)
        except OSError:
            client_w.close()  # the server is down: its port refuses, so does ours
            return
        link.writers.append(server_w)
        await asyncio.gather(self._pump(link, "up", client_r, server_w),
                             self._pump(link, "down", server_r, client_w))

    def _due(self, link: _Link, way: str) -> float:
        hold = self._mean + self._random.uniform(-self._jitter, self._jitter)
        if self._loss and self._random.random() < self._loss:
            hold += self._random.uniform(*RETRANSMIT)
        due = max(time.monotonic() + max(hold, 0.0), link.last_due.get(way, 0.0))
        link.last_due[way] = due
        return due

    async def _pump(self, link: _Link, way: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Read one way as fast as the sender sends; deliver each chunk when due."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(link, queue, writer))
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((self._due(link, way), chunk))
        except OSError:
            pass
        queue.put_nowait((0.0, b""))  # the end of the stream
        await deliver

    async def _deliver(self, link: _Link, queue: asyncio.Queue[tuple[float, bytes]],
                       writer: asyncio.StreamWriter) -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            await self._flowing.wait()
            if link.dead:
                continue  # dropped; and a dead link never closes
            if not chunk:
                writer.close()
                return
            try:
                writer.write(chunk)
                await writer.drain()
            except OSError:
                return
