"""The middlewares on PostgresStore, on both faces: the shared suite straight
and through PgBouncer, round trips counted on the wire, a stalled server,
connections killed by the server, what a thread per request leaves behind,
and the core promise through two uvicorn workers and through gunicorn (a
restart in the middle of traffic is the fault suite's, in tests/faults)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sessionware.stores import PostgresStore, Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.pg_wire import StatementCounter
from tests.support.processes import gunicorn, serve, uvicorn
from tests.support.servers.postgres import PostgresServer
from tests.support.stalled import stalled_server_answers_503
from tests.web.asgi.test_end_to_end import APP, all_200_kept

TABLE = "middleware_sessions"


class TestMiddlewareOnPostgres(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, postgres_dsn: str) -> Store:
        return PostgresStore(postgres_dsn, table=TABLE)


class TestMiddlewareOnPostgresThroughPgBouncer(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, pgbouncer_dsn: str, postgres_dsn: str) -> Store:
        return PostgresStore(pgbouncer_dsn, table=TABLE, prepare=False, listen_dsn=postgres_dsn)


async def test_round_trips_on_the_wire_are_2_1_0(postgres_server: PostgresServer,
                                                 face: str) -> None:
    """Counted by a TCP proxy between the pool and the server: every Sync that
    ends an executed statement and every simple Query is one round trip; a
    statement's preparation on a connection it first runs on is counted apart
    (the listener connects past the proxy, and is not started by these requests
    anyway)."""
    counter = StatementCounter(postgres_server.port)
    await counter.start()
    try:
        store = PostgresStore(counter.dsn, table=TABLE, listen_dsn=postgres_server.dsn)
        async with serving(store, face) as app, app.client(base_url="http://t") as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie
            for _ in range(3):  # the pool opens its connections
                await client.get("/inc?delay=0", headers=cookie_header(cookie))
                await client.get("/n", headers=cookie_header(cookie))
            counter.take()
            await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert counter.take() == 2
            await client.get("/n", headers=cookie_header(cookie))
            assert counter.take() == 1
            client.cookies.clear()  # a visitor without a session cookie
            await client.get("/hello")
            assert counter.take() == 0
    finally:
        await counter.aclose()


async def test_200_concurrent_increments_through_two_uvicorn_workers_end_at_200(
    postgres_dsn: str,
) -> None:
    env = {"SESSIONWARE_TEST_STORE": f"postgres:{postgres_dsn}"}
    with serve(uvicorn(APP, workers=2), env) as server:
        for _ in range(2):
            await all_200_kept(server.url)


async def test_200_concurrent_increments_through_gunicorn_end_at_200(postgres_dsn: str) -> None:
    """The Flask app on the sync face, gunicorn --preload with 2 gthread
    workers x 8 threads: the store is set up in the master, so each worker
    opens its own pool and listener after the fork."""
    env = {"SESSIONWARE_TEST_STORE": f"postgres:{postgres_dsn}"}
    command = gunicorn("tests.support.apps.flask_counter:app_from_env()",
                       "-w", "2", "-k", "gthread",
                       "--threads", "8", "--preload")
    with serve(command, env) as server:
        await all_200_kept(server.url)


# -- a stalled server, killed connections, a thread per request -----------------------

async def test_a_stalled_server_gives_503_within_store_timeout(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    """Bounded by ``store_timeout``, not by the store's 30 s ``timeout``: the
    async face's deadline cancels the call, the sync face's alarm ends it at
    what is left of the store call; either way its connection's socket is
    shut, not left to psycopg's cancel request (to a server that answers
    nothing)."""
    server = postgres_server_factory()
    await stalled_server_answers_503(lambda: PostgresStore(server.dsn, timeout=30.0), server, face)


async def test_connections_killed_by_the_server_cost_at_most_a_503_each_then_recover(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    """An administrator (or a failover) ends every session of the store's
    user: pooled connections found dead are discarded before use, and the
    pool opens new ones; no request waits for a broken connection."""
    server = postgres_server_factory()
    async with serving(PostgresStore(server.dsn, min_connections=2), face) as app, \
            app.client(timeout=30) as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        await asyncio.gather(*(client.get("/n", headers=cookie_header(cookie))
                               for _ in range(8)))  # several pooled connections
        with server.connect() as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        statuses = [(await client.get("/inc?delay=0", headers=cookie_header(cookie))).status_code
                    for _ in range(10)]
        assert statuses.count(200) >= 9, statuses
        assert set(statuses) <= {200, 503}
        n = (await client.get("/n", headers=cookie_header(cookie))).text
        assert n == str(1 + statuses.count(200))


async def test_a_thread_per_request_leaves_no_connection_behind(
    postgres_server_factory: Callable[[], PostgresServer], face: str
) -> None:
    """On the sync face every request here runs on a new thread (as under
    ``flask run``): connections come from the store's pool, never one per
    thread. The async face sends the session operations over one connection."""
    server = postgres_server_factory()  # its own: no other test's connections counted
    async with serving(PostgresStore(server.dsn), face) as app, app.client() as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        for _ in range(30):
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert response.status_code == 200
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "31"
        with server.connect() as probe:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()").fetchone()
    assert row is not None
    # the pool's one, and one more opened while it was busy (set-up); on the
    # async face the session operations' one pipelined connection besides
    assert row[0] <= (2 if face == "sync" else 3)
