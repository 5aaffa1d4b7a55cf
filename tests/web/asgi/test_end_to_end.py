"""The core promise, end to end: real uvicorn processes sharing one store.

These tests start servers as subprocesses; the process-level faults (a killed
holder, a stalled or restarted store) are the fault suite's, in tests/faults.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.helpers import cookie_header, session_cookie
from tests.support.processes import serve, uvicorn

APP = "tests.support.apps.counter:app_from_env"


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


async def all_200_kept(url: str) -> None:
    """200 concurrent increments of a new session: each answered, none lost."""
    cookie = await new_session(url)
    responses = await increments(url, 200, cookie)
    assert {r.status_code for r in responses} == {200}, {r.text for r in responses}
    assert sorted(int(r.text) for r in responses) == list(range(2, 202))
    assert await read_n(url, cookie) == 201


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'sessions.db'}"


async def test_200_concurrent_increments_through_two_workers_end_at_200(
    sqlite_spec: str,
) -> None:
    with serve(uvicorn(APP, workers=2), {"SESSIONWARE_TEST_STORE": sqlite_spec}) as server:
        for _ in range(3):
            await all_200_kept(server.url)
