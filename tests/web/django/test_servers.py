"""The test project (tests/support/apps/django_site) under real servers, on
the stores that processes share (SQLite, Redis), reached over sockets:

* gunicorn, Django's WSGI handler on the sync face: sync workers (2
  processes, a request at a time each), the same with ``--preload`` (the
  middleware, and its store, made in the master before the fork) and gthread
  workers (2 processes x 8 threads);
* uvicorn, Django's ASGI handler on the async face (2 processes).

One server per kind and store serves the whole module. Each is checked for
what the issue asks: 200 concurrent increments of one session lose nothing
(an ``async def`` view under uvicorn), a view that raises changes nothing,
login and logout through ``contrib.auth``, messages, CSRF with
``CSRF_USE_SESSIONS``, a streamed response; and ``clearsessions`` purges
expired sessions through the store, run as its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings

from sessionware import SyncSessionAdmin
from sessionware.stores import SQLiteStore
from tests.support.helpers import cookie_header, session_cookie
from tests.support.processes import ROOT, Server, gunicorn, serve, uvicorn
from tests.support.servers.redis import RedisServer
from tests.web.django.conftest import SETTINGS_MODULE, stored_rows, wait_until

WSGI = "tests.support.apps.django_site.wsgi:application"
ASGI = "tests.support.apps.django_site.asgi:application"
COOKIE = "sessionid"
CLIENTS = 200  # concurrent increments of one session
USER, PASSWORD = "server-user", "server-pw"

SERVERS = {
    "gunicorn-sync": gunicorn(WSGI, "-w", "2"),
    "gunicorn-sync-preload": gunicorn(WSGI, "-w", "2", "--preload"),
    "gunicorn-gthread": gunicorn(WSGI, "-w", "2", "-k", "gthread", "--threads", "8"),
    "uvicorn": uvicorn(ASGI, workers=2, factory=False),
}


@dataclass
class Site:
    server: Server
    asgi: bool

    @property
    def increment(self) -> str:
        """The counter's view: ``async def`` under ASGI, a plain one under WSGI."""
        return "/ainc" if self.asgi else "/inc"


@pytest.fixture(scope="module")
def user() -> None:
    """The project's user, in the database the servers share."""
    from django.contrib.auth.models import User  # once Django is set up

    made, _ = User.objects.get_or_create(username=USER)
    made.set_password(PASSWORD)
    made.save()


@pytest.fixture(scope="module", params=[(server, store) for server in SERVERS
                                        for store in ("sqlite", "redis")],
                ids=lambda param: "-".join(param))
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         user: None) -> Iterator[Site]:
    kind, store = request.param
    if store == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('django-servers') / 'sessions.db'}"
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        url = redis.url
    env = {"SESSIONWARE_STORE_URL": url, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
           "SESSIONWARE_DJANGO_DB": str(settings.DATABASES["default"]["NAME"])}
    with serve(SERVERS[kind], env) as server:
        yield Site(server, asgi=kind == "uvicorn")


@pytest.fixture
async def http(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    """A browser: it keeps its cookies. No idle connection is used again:
    gunicorn closes one after its keep-alive (2 s), and a request sent as it
    closes is lost, which says nothing of the session."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=site.server.url, limits=limits, timeout=30) as client:
        yield client


async def started(http: httpx.AsyncClient) -> str:
    """A new session whose counter is 1: its cookie."""
    first = await http.get("/inc?delay=0")
    assert first.text == "1"
    cookie = session_cookie(first, COOKIE)
    assert cookie
    return cookie


async def count(http: httpx.AsyncClient, cookie: str) -> str:
    return (await http.get("/n", headers=cookie_header(cookie, COOKIE))).text


async def test_concurrent_increments_lose_nothing(site: Site, http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    http.cookies.clear()  # each request names the session itself
    responses = await asyncio.gather(
        *(http.get(site.increment, headers=cookie_header(cookie, COOKIE))
          for _ in range(CLIENTS)))
    assert {r.status_code for r in responses} == {200}, {r.text for r in responses}
    assert sorted(int(r.text) for r in responses) == list(range(2, CLIENTS + 2))
    assert await count(http, cookie) == str(CLIENTS + 1)


async def test_a_view_that_fails_changes_nothing(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    http.cookies.clear()
    assert (await http.get("/boom", headers=cookie_header(cookie, COOKIE))).status_code == 500
    assert (await http.get("/server-error",
                           headers=cookie_header(cookie, COOKIE))).status_code == 503
    assert await count(http, cookie) == "1"  # and the lock was released


async def csrf_token(http: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRFToken": (await http.get("/csrf")).text}


async def test_login_and_logout_through_contrib_auth(http: httpx.AsyncClient) -> None:
    anonymous = await started(http)
    login = await http.post("/login", data={"username": USER, "password": PASSWORD},
                            headers=await csrf_token(http))
    assert login.text == f"hello {USER}"
    logged_in = http.cookies[COOKIE]
    assert logged_in != anonymous  # the key was cycled
    assert (await http.get("/whoami")).text == USER
    assert (await http.get("/n")).text == "1"  # the anonymous session's data came along
    logout = await http.post("/logout", headers=await csrf_token(http))  # login rotated it
    assert logout.text == "bye"
    assert session_cookie(logout, COOKIE) == ""  # expired
    for old in (anonymous, logged_in):
        http.cookies.clear()
        assert (await http.get("/whoami", headers=cookie_header(old, COOKIE))).text == "anonymous"


async def test_messages_live_in_the_session(http: httpx.AsyncClient) -> None:
    await http.get("/message", params={"text": "saved"})
    assert (await http.get("/messages")).text == "saved"
    assert (await http.get("/messages")).text == ""  # shown once


async def test_csrf_with_csrf_use_sessions(http: httpx.AsyncClient) -> None:
    token = await csrf_token(http)
    assert "csrftoken" not in http.cookies  # the secret lives in the session
    assert (await http.post("/form", data={"value": "x"})).status_code == 403
    assert (await http.post("/form", data={"value": "x"}, headers=token)).text == "posted x"


async def test_a_streamed_response_commits_before_its_body(http: httpx.AsyncClient) -> None:
    cookie = await started(http)
    response = await http.get("/stream")
    assert response.text == "streamed after the commit"
    assert await count(http, cookie) == "2"


def test_clearsessions_purges_expired_sessions_through_the_store(tmp_path: Path) -> None:
    """``django-admin clearsessions``, run as its own process, deletes the
    expired session from the SQLite store and keeps the live one."""
    path = tmp_path / "sessions.db"
    store = SQLiteStore(str(path))

    try:
        with override_settings(SESSIONWARE={"STORE": store, "IDLE_TIMEOUT": 0.2}):
            Client().get("/inc")
        with override_settings(SESSIONWARE={"STORE": store}):
            Client().get("/inc")
        admin = SyncSessionAdmin(store.sync(), secret_key=settings.SECRET_KEY)
        wait_until(lambda: admin.stats().sessions == 1)  # one expired, still stored
        assert stored_rows(path) == 2
    finally:
        store.sync().close()
    command = [sys.executable, "-m", "django", "clearsessions", f"--settings={SETTINGS_MODULE}"]
    subprocess.run(command, cwd=ROOT, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT),
                        "SESSIONWARE_STORE_URL": f"sqlite:///{path}",
                        "SESSIONWARE_DJANGO_DB": str(settings.DATABASES["default"]["NAME"])})
    assert stored_rows(path) == 1
