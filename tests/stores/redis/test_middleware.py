"""The middlewares on RedisStore, on both faces: the shared suite on a server
and on a cluster, round trips counted on the wire, a stalled server, what a
thread per request leaves behind, and the core promise through uvicorn (a
restart in the middle of traffic is the fault suite's, in tests/faults; WSGI
servers are tests/web/wsgi/test_servers.py's)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from sessionware.stores import RedisStore, Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.processes import serve, uvicorn
from tests.support.servers.redis import CountingProxy, RedisServer
from tests.support.stalled import stalled_server_answers_503
from tests.web.asgi.test_end_to_end import APP, all_200_kept


class TestMiddlewareOnRedis(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url)


class TestMiddlewareOnRedisCluster(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, redis_cluster_url: str) -> Store:
        return RedisStore(redis_cluster_url, cluster=True)


async def test_round_trips_on_the_wire_are_2_1_0(redis_server: RedisServer, face: str) -> None:
    """Counted by a TCP proxy between the store and the server: what is sent."""
    proxy = CountingProxy(redis_server.port)
    await proxy.start()
    try:
        async with serving(RedisStore(proxy.url), face) as app, \
                app.client(base_url="http://t") as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie
            proxy.take()
            await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert proxy.take() == ["EVALSHA", "EVALSHA"]
            await client.get("/n", headers=cookie_header(cookie))
            assert proxy.take() == ["EVALSHA"]
            client.cookies.clear()  # a visitor without a session cookie
            await client.get("/hello")
            assert proxy.take() == []
    finally:
        await proxy.aclose()


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_200_concurrent_increments_through_two_workers_end_at_200(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    with serve(uvicorn(APP, workers=2), {"SESSIONWARE_TEST_STORE": f"{kind}:{url}"}) as server:
        for _ in range(2):
            await all_200_kept(server.url)


def test_redis_py_is_the_client_under_test() -> None:
    assert redis.__version__


# -- a stalled server, and what a thread per request leaves behind ---------------

async def test_a_stalled_server_gives_503_within_store_timeout(
    redis_server_factory: Callable[..., RedisServer], face: str
) -> None:
    """Bounded by ``store_timeout``, not by the 30 s socket timeout: the async
    face's watchdog cuts the call off; the sync face cannot cut a blocking call
    off, so it bounds its own wait by what is left of the store call."""
    server = redis_server_factory()
    await stalled_server_answers_503(lambda: RedisStore(server.url, socket_timeout=30.0), server,
                                     face, within=5.0)


async def test_a_thread_per_request_leaves_no_connection_behind(
    redis_server_factory: Callable[..., RedisServer], face: str
) -> None:
    """On the sync face every request here runs on a new thread (as under
    ``flask run``), with a blocking connection of its own: it must close when
    the thread ends. The async face shares one connection."""
    server = redis_server_factory()  # its own: no other test's connections counted
    async with serving(RedisStore(server.url), face) as app, app.client() as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        for _ in range(20):
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert response.status_code == 200
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "21"
        with server.client() as probe:
            connections = len(probe.client_list()) - 1  # not the probe itself
    # the set-up client's, the one in use, and slack for a request thread ending
    assert connections <= 3
