"""The Litestar app under uvicorn: two worker processes sharing one store,
SQLite and Redis (a private server per test), reached over real sockets.

The middleware suite's core cases: no lost updates, a raising handler changes
nothing, regenerate, ``set_session()`` (a dict, a model) and
``clear_session()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.helpers import cookie_header, session_cookie
from tests.support.processes import Server, serve, uvicorn
from tests.web.litestar.test_litestar import data, started

APP = "tests.support.apps.litestar_counter:app_from_env"


@pytest.fixture(params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        spec = f"sqlite:{tmp_path / 'sessions.db'}"
    else:
        spec = f"redis:{request.getfixturevalue('redis_server_factory')().url}"
    with serve(uvicorn(APP, workers=2), {"SESSIONWARE_TEST_STORE": spec}) as running:
        yield running


@pytest.fixture
async def http(server: Server) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def test_200_concurrent_increments_lose_nothing(server: Server) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
        cookie = await started(http)
        responses = await asyncio.gather(
            *(http.get("/inc", headers=cookie_header(cookie)) for _ in range(200)))
        assert {r.status_code for r in responses} == {200}
        assert sorted(int(r.text) for r in responses) == list(range(2, 202))
        assert (await http.get("/n", headers=cookie_header(cookie))).text == "201"


async def test_a_raising_handler_changes_nothing(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    for path in ("/boom", "/set-then-fail"):
        assert (await http.get(path, headers=cookie_header(cookie))).status_code == 500
    assert await data(http, cookie) == {"n": 1}
    assert (await http.get("/inc", headers=cookie_header(cookie))).text == "2"


async def test_set_session_writes_a_dict_and_a_model(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    await http.get("/set?user=bob", headers=cookie_header(cookie))
    assert await data(http, cookie) == {"user": "bob", "items": []}
    for kind in ("dataclass", "pydantic", "msgspec"):
        response = await http.get(f"/set-model?kind={kind}&user={kind}",
                                  headers=cookie_header(cookie))
        assert response.status_code == 200
        assert await data(http, cookie) == {"user": kind, "items": ["a", "b"]}


async def test_regenerate_moves_the_session(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    new = session_cookie(await http.get("/login?user=al", headers=cookie_header(cookie)))
    assert new and new != cookie
    assert await data(http, new) == {"n": 1, "user": "al"}
    assert await data(http, cookie) == {}


async def test_clear_session_kills_the_old_cookie(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    response = await http.get("/clear", headers=cookie_header(cookie))
    assert response.status_code == 200
    assert session_cookie(response) == ""
    assert await data(http, cookie) == {}
    again = await http.get("/inc", headers=cookie_header(cookie))
    assert again.text == "1"
    assert session_cookie(again) not in ("", cookie)
