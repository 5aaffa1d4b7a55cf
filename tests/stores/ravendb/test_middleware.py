"""The middlewares on RavenDBStore, on both faces: the shared suite, requests
counted on the wire, a stalled server, and the core promise through two uvicorn
workers and through gunicorn (a killed, stalled or restarted server in the
middle of traffic is the fault suite's, in tests/faults)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sessionware.stores import RavenDBStore, Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.processes import gunicorn, serve, uvicorn
from tests.support.servers.ravendb import (
    DATABASE,
    HTTPRequestCounter,
    RavenServer,
    RavenTarget,
)
from tests.support.stalled import stalled_server_answers_503
from tests.web.asgi.test_end_to_end import APP, all_200_kept


class TestMiddlewareOnRavenDB(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, ravendb: RavenTarget) -> Store:
        return RavenDBStore(ravendb.url, ravendb.swept, collection=ravendb.collection())


async def test_round_trips_on_the_wire_are_2_1_0(ravendb: RavenTarget, face: str) -> None:
    """Counted by a TCP proxy between the store and RavenDB: every request sent."""
    port = int(ravendb.url.rpartition(":")[2])
    counter = HTTPRequestCounter(port)
    await counter.start()
    try:
        store = RavenDBStore(counter.endpoint, ravendb.swept, collection=ravendb.collection())
        async with serving(store, face) as app, app.client(base_url="http://t") as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie
            counter.take()  # set-up, the client's topology, the session's creation
            await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert counter.take() == ["PATCH docs", "PATCH docs"]  # acquire, commit
            await client.get("/n", headers=cookie_header(cookie))
            assert counter.take() == ["GET docs"]
            client.cookies.clear()  # a visitor without a session cookie
            await client.get("/hello")
            assert counter.take() == []
    finally:
        await counter.aclose()


async def test_200_concurrent_increments_through_two_uvicorn_workers_end_at_200(
    ravendb: RavenTarget,
) -> None:
    """Waiters of the other worker poll (125-250 ms at most between looks);
    those of the same worker are woken at the release."""
    with serve(uvicorn(APP, workers=2), {"SESSIONWARE_TEST_STORE": ravendb.spec()}) as server:
        for _ in range(2):
            await all_200_kept(server.url)


async def test_200_concurrent_increments_through_gunicorn_end_at_200(
    ravendb: RavenTarget,
) -> None:
    """The Flask app on the sync face, gunicorn --preload with 2 gthread
    workers x 8 threads: the store is set up in the master, so each worker
    makes its own client after the fork."""
    command = gunicorn("tests.support.apps.flask_counter:app_from_env()",
                       "-w", "2", "-k", "gthread", "--threads", "8", "--preload")
    with serve(command, {"SESSIONWARE_TEST_STORE": ravendb.spec()}) as server:
        await all_200_kept(server.url)


async def test_a_stalled_server_gives_503_within_store_timeout(
    ravendb_server_factory: Callable[[], RavenServer], face: str
) -> None:
    """Bounded by ``store_timeout``, not by the store's 30 s ``timeout``: the
    async face's deadline cancels the call, the sync face bounds the request's
    timeout by what is left of the store call."""
    server = ravendb_server_factory()
    await stalled_server_answers_503(
        lambda: RavenDBStore(server.url, DATABASE, timeout=30.0), server, face)
