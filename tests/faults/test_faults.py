"""The fault suite: what a request answers is what happened to its session,
whatever the store's process does meanwhile. Every store with a process of
its own joins by a target in ``targets.py``.

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

from tests.apps.counter import build_app
from tests.faults.targets import RedisTarget, Target
from tests.helpers import CountingStore, cookie_header, session_cookie
from tests.servers.processes import serve, uvicorn
from tests.test_end_to_end import APP

UNCONFIRMED = "did not confirm"  # the body of OutcomeUnknown's 500


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll a condition the test waits for, within a bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def in_process(target: Target, **options: object
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, CountingStore, str]]:
    """The app in this process over the target's store; a session exists."""
    counting = CountingStore(target.store())
    app = build_app(counting, **options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 timeout=60) as client:
        cookie = session_cookie(await client.get("/add?id=first"))
        assert cookie
        client.app = app  # type: ignore[attr-defined]
        yield client, counting, cookie
    await counting.aclose()


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
    target: Target, tmp_path: Path
) -> None:
    lease = 1.0
    env = {"SESSIONWARE_TEST_STORE": target.spec, "SESSIONWARE_TEST_LEASE": str(lease)}
    marker = tmp_path / "holding"
    with serve(uvicorn(APP), env) as doomed:
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
    with serve(uvicorn(APP), env) as survivor:
        async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as client:
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        waited = time.monotonic() - killed_at
    assert response.status_code == 200
    assert response.text == "2"  # the dead request's +1000 was never committed
    assert waited < lease + 5.0  # reclaimed once the lease lapsed, not after a long timeout


async def test_a_stalled_holder_is_fenced_off_when_it_resumes(
    target: Target, tmp_path: Path
) -> None:
    """A worker SIGSTOPped while it holds the lock stops renewing; another
    worker takes the session over; when the first resumes, its commit is
    refused (409) and the newer data stays."""
    env = {"SESSIONWARE_TEST_STORE": target.spec, "SESSIONWARE_TEST_LEASE": "1.0"}
    marker = tmp_path / "holding"
    with serve(uvicorn(APP), env) as stalled, serve(uvicorn(APP), env) as other:
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

async def test_a_commit_stalled_past_store_timeout_is_settled_before_answering(
    target: Target,
) -> None:
    """The store stalls while a request commits; it resumes while the core
    repeats the commit: the request is answered 200, and it is stored once."""
    async with in_process(target, store_timeout=1.0) as (client, counting, cookie):
        app = client.app  # type: ignore[attr-defined]
        request = asyncio.create_task(
            client.get("/hold-add?id=x", headers=cookie_header(cookie)))
        await asyncio.wait_for(app.state.holding.wait(), 10)
        commits = counting.calls["commit"]
        with target.stalled():
            app.state.release.set()
            # the first attempt timed out and the core repeats it: resume now
            await until(lambda: counting.calls["commit"] >= commits + 2, 20)
        response = await request
        assert (response.status_code, response.text) == (200, "added")
        assert await stored_ids(client, cookie) == ["first", "x"]


async def test_a_store_stalled_past_settling_answers_that_the_outcome_is_unknown(
    target: Target,
) -> None:
    """Stalled for longer than the core keeps repeating: the answer says the
    change may or may not be saved (never 503, which would say it was not)."""
    async with in_process(target, store_timeout=0.5) as (client, _, cookie):
        app = client.app  # type: ignore[attr-defined]
        request = asyncio.create_task(
            client.get("/hold-add?id=x", headers=cookie_header(cookie)))
        await asyncio.wait_for(app.state.holding.wait(), 10)
        with target.stalled():
            app.state.release.set()
            response = await asyncio.wait_for(request, 20)
        assert response.status_code == 500
        assert UNCONFIRMED in response.text
        assert "retry-after" not in response.headers
        stored = await stored_ids(client, cookie)
        assert stored in (["first"], ["first", "x"])


async def test_a_stall_mid_traffic_answers_every_request_truthfully(target: Target) -> None:
    async with in_process(target, store_timeout=0.5, lock_timeout=3.0) as (client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 10, 20)
            with target.stalled():
                stalled_from = len(traffic.answers)
                await until(lambda: len(traffic.answers) >= stalled_from + 4, 30)
            resumed_at = traffic.count(200)
            await until(lambda: traffic.count(200) >= resumed_at + 10, 30)
        assert len(traffic.answers) > traffic.count(200), "the stall changed nothing"
        check_outcomes(traffic.answers, await stored_ids(client, cookie))


# -- a restarted server --------------------------------------------------------------

async def test_a_server_restart_mid_traffic_gives_503s_then_recovers_intact(
    server_target: RedisTarget,
) -> None:
    target = server_target
    async with in_process(target, store_timeout=1.0, lease_ttl=1.0,
                          lock_timeout=5.0) as (client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 20, 20)
            await asyncio.to_thread(target.server.stop)
            down_from = len(traffic.answers)
            await until(lambda: traffic.count(503, down_from) >= 5, 20)
            await asyncio.to_thread(target.server.start)
            up_from = len(traffic.answers)
            await until(lambda: traffic.count(200, up_from) >= 20, 30)
        check_outcomes(traffic.answers, await stored_ids(client, cookie))
