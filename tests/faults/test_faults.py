"""The fault suite: what a request answers is what happened to its session,
whatever the store's process does meanwhile (the network's faults:
test_network.py). Every store with a process of
its own joins by a target in ``targets.py``, and every test runs on both faces
(``face``): the ASGI app over the store's async face, and the WSGI app over its
sync face, in this process (tests/support/apps/served.py) or as servers of their own
(uvicorn; gunicorn with gthread workers).

Each request of the traffic appends its own id to a list in the session, and
every answer is checked against the stored list (history.py).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.history import (
    UNCONFIRMED,
    Traffic,
    check_outcomes,
    in_process,
    server,
    stored_ids,
    until,
)
from tests.faults.targets import RedisTarget, Target
from tests.support.helpers import cookie_header, session_cookie
from tests.support.processes import serve

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
    async with in_process(target.store(), face,
                          store_timeout=1.0) as (app, client, counting, cookie):
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
    async with in_process(target.store(), face, store_timeout=0.5) as (app, client, _, cookie):
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
    async with in_process(target.store(), face, store_timeout=0.5, lock_timeout=3.0,
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
    async with in_process(target.store(), face, store_timeout=1.0, lease_ttl=1.0,
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
