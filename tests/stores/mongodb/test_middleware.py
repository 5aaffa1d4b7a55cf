"""The middlewares on MongoDBStore, on both faces: the shared suite, round
trips counted on the wire, a stalled server, and the core promise through two
uvicorn workers and through gunicorn (a restart in the middle of traffic is
the fault suite's, in tests/faults). On the mongoeco emulator, and on a real
server too when MONGODB_URL names one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sessionware.stores import MongoDBStore, Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.mongo_wire import CommandCounter
from tests.support.processes import gunicorn, serve, uvicorn
from tests.support.servers.mongodb import MongoecoServer, MongoTarget
from tests.support.stalled import stalled_server_answers_503
from tests.web.asgi.test_end_to_end import APP, all_200_kept


class TestMiddlewareOnMongoDB(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, mongodb: MongoTarget) -> Store:
        return MongoDBStore(mongodb.url, database=mongodb.database())


async def test_round_trips_on_the_wire_are_2_1_0(mongodb_server: MongoecoServer,
                                                 face: str) -> None:
    """Counted by a TCP proxy between the driver and the server: every
    command but the driver's own handshakes and heartbeats."""
    counter = CommandCounter(mongodb_server.port)
    await counter.start()
    try:
        store = MongoDBStore(counter.url, database="round_trips")
        async with serving(store, face) as app, app.client(base_url="http://t") as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie
            counter.take()  # setup's createIndexes, the first request's create
            await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert counter.take() == ["findAndModify", "update"]
            await client.get("/n", headers=cookie_header(cookie))
            assert counter.take() == ["findAndModify"]  # read, sliding the expiry
            client.cookies.clear()  # a visitor without a session cookie
            await client.get("/hello")
            assert counter.take() == []
    finally:
        await counter.aclose()


async def test_200_concurrent_increments_through_two_uvicorn_workers_end_at_200(
    mongodb: MongoTarget,
) -> None:
    env = {"SESSIONWARE_TEST_STORE": f"mongodb:{mongodb.url}"}
    with serve(uvicorn(APP, workers=2), env) as server:
        for _ in range(2):
            await all_200_kept(server.url)


async def test_200_concurrent_increments_through_gunicorn_end_at_200(
    mongodb: MongoTarget,
) -> None:
    """The Flask app on the sync face, gunicorn --preload with 2 gthread
    workers x 8 threads: the store is set up in the master, so each worker
    makes its own client after the fork."""
    env = {"SESSIONWARE_TEST_STORE": f"mongodb:{mongodb.url}"}
    command = gunicorn("tests.support.apps.flask_counter:app_from_env()",
                       "-w", "2", "-k", "gthread",
                       "--threads", "8", "--preload")
    with serve(command, env) as server:
        await all_200_kept(server.url)


async def test_a_stalled_server_gives_503_within_store_timeout(
    mongodb_server_factory: Callable[[], MongoecoServer], face: str
) -> None:
    """Bounded by ``store_timeout``, not by the store's 30 s ``timeout``: the
    async face's deadline cancels the call, the sync face bounds pymongo's
    operation timeout by what is left of the store call."""
    server = mongodb_server_factory()
    await stalled_server_answers_503(lambda: MongoDBStore(server.url, timeout=30.0), server, face)
