"""The middleware on RedisStore: the shared suite on a server and on a cluster,
round trips counted by the server itself, and the core promise through uvicorn
(a restart in the middle of traffic is the fault suite's, in tests/faults)."""

from __future__ import annotations

import httpx
import pytest
import redis

from sessionware.stores import RedisStore, Store
from tests.apps.counter import build_app
from tests.helpers import cookie_header, session_cookie
from tests.middleware_suite import MiddlewareSuite
from tests.servers.processes import serve, uvicorn
from tests.servers.redis import CountingProxy, RedisServer
from tests.test_end_to_end import APP, increments, new_session, read_n


class TestMiddlewareOnRedis(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, redis_url: str) -> Store:
        return RedisStore(redis_url)


class TestMiddlewareOnRedisCluster(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, redis_cluster_url: str) -> Store:
        return RedisStore(redis_cluster_url, cluster=True)


async def test_round_trips_on_the_wire_are_2_1_0(redis_server: RedisServer) -> None:
    """Counted by a TCP proxy between the store and the server: what is sent."""
    proxy = CountingProxy(redis_server.port)
    await proxy.start()
    try:
        async with RedisStore(proxy.url) as store:
            transport = httpx.ASGITransport(app=build_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
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
            cookie = await new_session(server.url)
            responses = await increments(server.url, 200, cookie)
            assert {r.status_code for r in responses} == {200}
            assert await read_n(server.url, cookie) == 201


def test_redis_py_is_the_client_under_test() -> None:
    assert redis.__version__
