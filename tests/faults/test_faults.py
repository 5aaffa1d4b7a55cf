"""The fault suite: what a request answers is what happened to its session,
whatever the store's process does meanwhile. Every store with a process of
its own joins by a target in ``targets.py``, and every test runs on both faces
(``face``): the ASGI app over the store's async face, and the WSGI app over its
sync face, in this process (tests/support/apps/served.py) or as servers of their own
(uvicorn; gunicorn with gthread workers).

Each request of the traffic appends its own id to a list in the session
(``/add?id=...``), so every answer is checked against the stored list:

* 200: the id is stored, exactly once;
* 503 (busy, store unavailable) and 409 (lease lost): the id is absent;
* 500 "did not confirm" (OutcomeUnknown): present at most once;
* nothing else is answered, and no id is stored that was not sent.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.faults.targets import RedisTarget, Target
from tests.support.apps.served import Served, build
from tests.support.faces import sync_face
from tests.support.helpers import CountingStore, SyncCountingStore, cookie_header, session_cookie
from tests.support.processes import gunicorn, serve, uvicorn

Counting = CountingStore | SyncCountingStore

UNCONFIRMED = "did not confirm"  # the body of OutcomeUnknown's 500


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll a condition the test waits for, within a bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


def server(face: str) -> list[str]:
    """The command of a server process of the counter app on ``face``."""
    if face == "async":
        return uvicorn("tests.support.apps.counter:app_from_env")
    return gunicorn("tests.support.apps.wsgi_counter:app_from_env()",
                    "-k", "gthread", "--threads", "4")


@asynccontextmanager
async def in_process(target: Target, face: str, **options: object
                     ) -> AsyncIterator[tuple[Served, httpx.AsyncClient, Counting, str]]:
    """The app in this process over the target's store on ``face``, the store
    set up and connected first (as the startup check does in a server), so that
    a short ``store_timeout`` bounds the operations under test and not the
    making of a driver's client; a session exists."""
    store = target.store()
    if face == "async":
        await store.setup()
        counting: Counting = CountingStore(store)
    else:
        faced = sync_face(store)
        await asyncio.to_thread(faced.setup)
        counting = SyncCountingStore(faced)
    app = build(counting, **options)
    try:
        async with app.client(base_url="http://t", timeout=60) as client:
            cookie = session_cookie(await client.get("/add?id=first"))
            assert cookie
            yield app, client, counting, cookie
    finally:
        app.release()
        if isinstance(counting, CountingStore):
            await counting.aclose()
        else:
            await asyncio.to_thread(counting.close)


async def stored_ids(client: httpx.AsyncClient, cookie: str, base: str = "") -> list[str]:
    response = await client.get(f"{base}/snapshot/ids", headers=cookie_header(cookie))
    assert response.status_code == 200, response.text
    return response.text.split()


class Traffic:
    """Four clients adding ids to one session until the block ends; every
    answer kept by its request's id, in the order they came."""

    def __init__(self, client: httpx.AsyncClient, cookie: str) -> None:
        self.client, self.cookie = client, cookie
        self.answers: dict[str, httpx.Response] = {}
        self._ids = (f"r{n}" for n in itertools.count())
        self._stop = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def count(self, status: int, since: int = 0) -> int:
        return sum(r.status_code == status for r in list(self.answers.values())[since:])

    async def _run(self) -> None:
        while not self._stop.is_set():
            request_id = next(self._ids)
            self.answers[request_id] = await self.client.get(
                f"/add?id={request_id}&delay=0.002", headers=cookie_header(self.cookie))

    async def __aenter__(self) -> Traffic:
        self._workers = [asyncio.create_task(self._run()) for _ in range(4)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)


def check_outcomes(answers: dict[str, httpx.Response], stored: list[str]) -> None:
    assert stored[0] == "first" and len(stored) == len(set(stored)), stored
    unexpected = set(stored) - set(answers) - {"first"}
    assert not unexpected, unexpected
    for request_id, response in answers.items():
        status, body = response.status_code, response.text
        if status == 200:
            assert request_id in stored, f"{request_id} answered 200 but was not stored"
        elif status in (409, 503):
            assert request_id not in stored, f"{request_id} answered {status}: {body}"
        else:
            assert (status, UNCONFIRMED in body) == (500, True), (request_id, status, body)


# -- a killed holder ---------------------------------------------------------------

async def test_a_killed_holder_is_reclaimed_within_its_lease(
    target: Target, face: str, tmp_path: Path
) -> None:
    lease = 1.0
    env = {"SESSIONWARE_TEST_STORE": target.spec, "SESSIONWARE_TEST_LEASE": str(lease)}
    marker = tmp_path / "holding"
    with serve(server(face), env) as doomed:
        async with httpx.AsyncClient(base_url=doomed.url, timeout=30) as client:
            cookie = session_cookie(await client.get("/inc?delay=0"))
            assert cookie
            held = asyncio.create_task(
                client.get(f"/hold?marker={marker}", headers=cookie_header(cookie)))
            await until(marker.exists, 20)  # the server signals through a file
            doomed.kill()
            killed_at = time.monotonic()
            with pytest.raises(httpx.HTTPError):
                await held
    with serve(server(face), env) as survivor:
        async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as client:
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        waited = time.monotonic() - killed_at
    assert response.status_code == 200
    assert response.text == "2"  # the dead request's +1000 was never committed
    assert waited < lease + 5.0  # reclaimed once the lease lapsed, not after a long timeout


async def test_a_stalled_holder_is_fenced_off_when_it_resumes(
    target: Target, face: str, tmp_path: Path
) -> None:
    """A worker SIGSTOPped while it holds the lock stops renewing; another
    worker takes the session over; when the first resumes, its commit is
    refused (409) and the newer data stays."""
    env = {"SESSIONWARE_TEST_STORE": target.spec, "SESSIONWARE_TEST_LEASE": "1.0"}
    marker = tmp_path / "holding"
    with serve(server(face), env) as stalled, serve(server(face), env) as other:
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.get(f"{stalled.url}/add?id=first")
            cookie = session_cookie(first)
            assert cookie
            held = asyncio.create_task(client.get(
                f"{stalled.url}/add?id=stale&delay=1.5&marker={marker}",
                headers=cookie_header(cookie)))
            await until(marker.exists, 20)
            stalled.signal(signal.SIGSTOP)
            try:
                fresh = await client.get(f"{other.url}/add?id=fresh",
                                         headers=cookie_header(cookie))
            finally:
                stalled.signal(signal.SIGCONT)
            assert (fresh.status_code, fresh.text) == (200, "added")
            stale = await held
            assert stale.status_code == 409, stale.text
            assert "refused" in stale.text
            assert await stored_ids(client, cookie, other.url) == ["first", "fresh"]


# -- a stalled store ---------------------------------------------------------------

async def test_a_commit_stalled_past_store_timeout_is_answered_truthfully(
    target: Target, face: str
) -> None:
    """The store stalls while a request commits. Where the first attempt's
    outcome is unknown (a command sent to a server; a write the async face's
    watchdog stopped waiting for), the core repeats the commit, the store
    resumes meanwhile: the request is answered 200, and it is stored once.
    Where the store knows the write was not applied (the sync face's SQLite
    gives up its wait for the write lock within the store call's time), the
    answer is 503 at once, and nothing is stored."""
    async with in_process(target, face, store_timeout=1.0) as (app, client, counting, cookie):
        request = asyncio.create_task(
            client.get("/hold-add?id=x", headers=cookie_header(cookie)))
        await app.holding()
        commits = counting.calls["commit"]
        with target.stalled():
            app.release()
            if target.refuses_when_stalled(face):
                response = await asyncio.wait_for(request, 20)
            else:
                # the first attempt timed out and the core repeats it: resume now
                await until(lambda: counting.calls["commit"] >= commits + 2, 20)
        if target.refuses_when_stalled(face):
            assert response.status_code == 503, response.text
            assert counting.calls["commit"] == commits + 1  # not repeated: known unapplied
            assert await stored_ids(client, cookie) == ["first"]
            return
        response = await request
        assert (response.status_code, response.text) == (200, "added")
        assert await stored_ids(client, cookie) == ["first", "x"]


async def test_a_store_stalled_past_settling_answers_that_the_outcome_is_unknown(
    target: Target, face: str
) -> None:
    """Stalled for longer than the core keeps repeating: the answer says the
    change may or may not be saved (never 503, which would say it was not),
    unless the store knows it was not applied (see above): then 503."""
    async with in_process(target, face, store_timeout=0.5) as (app, client, _, cookie):
        request = asyncio.create_task(
            client.get("/hold-add?id=x", headers=cookie_header(cookie)))
        await app.holding()
        with target.stalled():
            app.release()
            response = await asyncio.wait_for(request, 20)
        stored = await stored_ids(client, cookie)
        if target.refuses_when_stalled(face):
            assert response.status_code == 503, response.text
            assert stored == ["first"]
            return
        assert response.status_code == 500
        assert UNCONFIRMED in response.text
        assert "retry-after" not in response.headers
        assert stored in (["first"], ["first", "x"])


async def test_a_stall_mid_traffic_answers_every_request_truthfully(
    target: Target, face: str
) -> None:
    # a request whose write went unconfirmed leaves its lease to lapse: 1 s
    async with in_process(target, face, store_timeout=0.5, lock_timeout=3.0,
                          lease_ttl=1.0) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 10, 20)
            with target.stalled():
                stalled_from = len(traffic.answers)
                # the four requests in flight may have been served before the
                # stall: one more, sent during it, is answered
                await until(lambda: len(traffic.answers) >= stalled_from + 5, 30)
            resumed_at = traffic.count(200)
            await until(lambda: traffic.count(200) >= resumed_at + 10, 30)
        assert len(traffic.answers) > traffic.count(200), "the stall changed nothing"
        check_outcomes(traffic.answers, await stored_ids(client, cookie))


# -- a restarted server --------------------------------------------------------------

async def test_a_server_restart_mid_traffic_gives_503s_then_recovers_intact(
    server_target: RedisTarget, face: str
) -> None:
    target = server_target
    async with in_process(target, face, store_timeout=1.0, lease_ttl=1.0,
                          lock_timeout=5.0) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 20, 20)
            await asyncio.to_thread(target.server.stop)
            down_from = len(traffic.answers)
            await until(lambda: traffic.count(503, down_from) >= 5, 20)
            await asyncio.to_thread(target.server.start)
            up_from = len(traffic.answers)
            await until(lambda: traffic.count(200, up_from) >= 20, 30)
        check_outcomes(traffic.answers, await stored_ids(client, cookie))
