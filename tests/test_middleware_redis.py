"""The middleware on RedisStore: the shared suite on a server and on a cluster,
round trips counted by the server itself, the core promise through uvicorn, and
a server restart in the middle of traffic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

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
    async def store(self, redis_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_url) as store:
            yield store


class TestMiddlewareOnRedisCluster(MiddlewareSuite):
    @pytest.fixture
    async def store(self, redis_cluster_url: str) -> AsyncIterator[Store]:
        async with RedisStore(redis_cluster_url, cluster=True) as store:
            yield store


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


async def test_server_restart_mid_traffic_gives_503s_then_recovers_uncorrupted(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(persistent=True)
    statuses: list[int] = []
    async with RedisStore(server.url, socket_timeout=1.0) as store:
        app = build_app(store, lease_ttl=1.0, lock_timeout=5.0, store_timeout=1.0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     timeout=30) as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie

            async def traffic(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    response = await client.get("/inc?delay=0.002", headers=cookie_header(cookie))
                    statuses.append(response.status_code)

            async def until(predicate: Callable[[], bool]) -> None:
                while not predicate():  # noqa: ASYNC110 - waits on the traffic's outcome
                    await asyncio.sleep(0.01)

            stop = asyncio.Event()
            workers = [asyncio.create_task(traffic(stop)) for _ in range(4)]
            await asyncio.wait_for(until(lambda: statuses.count(200) >= 20), 20)
            await asyncio.to_thread(server.stop)
            down_from = len(statuses)
            await asyncio.wait_for(until(lambda: statuses[down_from:].count(503) >= 5), 20)
            await asyncio.to_thread(server.start)
            up_from = len(statuses)
            await asyncio.wait_for(until(lambda: statuses[up_from:].count(200) >= 20), 30)
            stop.set()
            await asyncio.gather(*workers)
            final = await client.get("/inc?delay=0", headers=cookie_header(cookie))
    assert set(statuses) <= {200, 503}
    assert final.status_code == 200
    # Every acknowledged increment survived; an increment whose reply was lost
    # with the connection (a 503 to the client) may or may not have been applied.
    ok, refused = statuses.count(200), statuses.count(503)
    assert 1 + ok + 1 <= int(final.text) <= 1 + ok + refused + 1
    with server.client() as probe:
        (key,) = probe.keys("sessionware:*")
        stored = probe.hgetall(key)
    assert json.loads(stored[b"d"]) == {"n": int(final.text)}
    assert stored[b"l"] == b"0"  # unlocked


def test_redis_py_is_the_client_under_test() -> None:
    assert redis.__version__
