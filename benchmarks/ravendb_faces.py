"""RavenDBStore's async face: the blocking official client on a thread pool (what
the store does) against RavenDB's HTTP API on an async client (httpx), the same
PATCH scripts and GETs on the same server: requests per second and this
process's CPU per request, at 1 and at 32 requests in flight.

    python -m benchmarks.ravendb_faces [--seconds 5]

Starts its own RavenDB 4.1 server (tests/support/servers/ravendb.py, installed
by scripts/install/ravendb.sh). The numbers are in benchmarks/profiling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import httpx

from sessionware._async.stores.ravendb import ACQUIRE, COMMIT
from sessionware.stores import Lease, RavenDBStore
from tests.support.servers.ravendb import RavenServer, create_database, speak_41, warm_up

DATABASE = "bench"
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def cycles(cycle: Callable[[str], Awaitable[None]], seconds: float,
                 in_flight: int) -> tuple[float, float]:
    """Requests per second, and CPU milliseconds of this process per request."""
    done = 0
    deadline = time.monotonic() + seconds
    keys = [f"k{secrets.token_hex(4)}{n}" for n in range(in_flight)]  # one per worker

    async def worker(n: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await cycle(keys[n])
            done += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(in_flight)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    requests = done * 3  # acquire, commit, read
    return requests / wall, 1000 * cpu / requests


async def main(seconds: float) -> None:
    server = RavenServer()
    server.start()
    try:
        speak_41()
        create_database(server.url, DATABASE)
        warm_up(server.url, DATABASE)
        async with RavenDBStore(server.url, DATABASE, sweep_every=None) as store, \
                httpx.AsyncClient(base_url=f"{server.url}/databases/{DATABASE}",
                                  transport=httpx.AsyncHTTPTransport(
                                      limits=httpx.Limits(max_connections=32),
                                      # as urllib3 does (the client's): else a request
                                      # waits for the server's delayed ACK
                                      socket_options=[NODELAY])) as http:
            async def threaded(key: str) -> None:
                lease = await store.acquire(key, lease_ttl=10)
                if lease is None:
                    await store.create(key, b"{}", ttl=600)
                    return
                if isinstance(lease, Lease):
                    await store.commit(lease, b'{"n": 1}', ttl=600)
                await store.read(key)

            async def raw(key: str) -> None:
                doc = f"docs?id={quote('Raw/' + key, safe='')}"
                now = time.time()
                answer = await http.patch(doc, json={
                    "Patch": {"Script": ACQUIRE, "Values": {"now": now, "until": now + 10}},
                    "PatchIfMissing": {"Script": "this.token = 1; this.expires_at = "
                                       f"{now + 600}; this.data = '';", "Values": {}}})
                answer.raise_for_status()
                token = answer.json()["ModifiedDocument"]["token"]
                answer = await http.patch(doc, json={"Patch": {"Script": COMMIT, "Values": {
                    "now": time.time(), "token": token, "ttl": 600,
                    "data": base64.b64encode(b'{"n": 1}').decode()}}})
                answer.raise_for_status()
                (await http.get(doc)).raise_for_status()

            for in_flight in (1, 32):
                for name, cycle in (("thread pool (the store)", threaded),
                                    ("async HTTP (httpx)", raw)):
                    await cycles(cycle, 1.0, in_flight)  # warm
                    rate, cpu = await cycles(cycle, seconds, in_flight)
                    print(f"{name:26} in flight {in_flight:2}: {rate:7.0f} requests/s, "
                          f"{cpu:.2f} ms CPU per request")
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
