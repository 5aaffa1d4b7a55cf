"""The core promise, end to end: real uvicorn processes sharing one store.

These tests start servers as subprocesses; every other process-level fault
test of a particular store lives next to that store's tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import cookie_header, session_cookie
from tests.servers.processes import serve, uvicorn

APP = "tests.apps.counter:app_from_env"


async def increments(url: str, count: int, cookie: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(client.get("/inc", headers=cookie_header(cookie)) for _ in range(count)))


async def new_session(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/inc?delay=0")
    cookie = session_cookie(response)
    assert cookie
    return cookie


async def read_n(url: str, cookie: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        return int((await client.get("/n", headers=cookie_header(cookie))).text)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'sessions.db'}"


async def test_200_concurrent_increments_through_two_workers_end_at_200(
    sqlite_spec: str,
) -> None:
    with serve(uvicorn(APP, workers=2), {"SESSIONWARE_TEST_STORE": sqlite_spec}) as server:
        for _ in range(3):
            cookie = await new_session(server.url)
            responses = await increments(server.url, 200, cookie)
            assert {r.status_code for r in responses} == {200}
            assert sorted(int(r.text) for r in responses) == list(range(2, 202))
            assert await read_n(server.url, cookie) == 201


async def test_killed_holder_is_reclaimed_within_its_lease(
    sqlite_spec: str, tmp_path: Path
) -> None:
    lease = 1.0
    env = {"SESSIONWARE_TEST_STORE": sqlite_spec, "SESSIONWARE_TEST_LEASE": str(lease)}
    marker = tmp_path / "holding"
    with serve(uvicorn(APP), env) as doomed:
        cookie = await new_session(doomed.url)
        async with httpx.AsyncClient(base_url=doomed.url, timeout=30) as client:
            held = asyncio.create_task(
                client.get(f"/hold?marker={marker}", headers=cookie_header(cookie)))
            while not marker.exists():  # the server signals through a file
                assert not held.done(), held.result()
                await asyncio.sleep(0.01)
            doomed.kill()
            killed_at = time.monotonic()
            with pytest.raises(httpx.HTTPError):
                await held
    with serve(uvicorn(APP), env) as survivor:
        async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as client:
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        waited = time.monotonic() - killed_at
    assert response.status_code == 200
    assert response.text == "2"  # the dead request's +1000 was never committed
    assert waited < lease + 5.0  # reclaimed once the lease lapsed, not after a long timeout
