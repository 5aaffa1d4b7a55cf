"""App hosts whose clocks disagree, on the stores that judge leases by the
client's clock: SQLite (no server: each process reads its own clock, and
processes on one host disagree only when the clock steps), DynamoDB
(condition expressions have no server time), Azure Table (neither do its
conditional writes) and RavenDB (its patch scripts are given the time).
Redis, PostgreSQL and MongoDB judge by their server's clock (``TIME``,
``now()``, ``$$NOW``): an app's clock plays no part there.

Two app processes (uvicorn) serve one session, one of them under libfaketime
(``LD_PRELOAD``): its wall clock is ahead by 0.5 s, 2 s or one lease, or it
steps back by two leases mid-traffic (its monotonic clock is left alone, as
NTP leaves it). Nothing acknowledged may be lost (the history check); each
test prints the 409s (a lease judged lapsed too early) and the longest wait.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.faults.history import Traffic, check_outcomes, server, stored_ids, until
from tests.faults.targets import (
    AzureTarget,
    DynamoDBTarget,
    RavenDBTarget,
    SQLiteTarget,
    Target,
)
from tests.support.helpers import session_cookie
from tests.support.processes import serve

LEASE = 4.0
STEP_BACK = 2 * LEASE


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail("libfaketime is missing: apt-get install faketime (scripts/test.sh does)")
    return found[0]


def skewed(clock: Path) -> dict[str, str]:
    """The environment of a process whose wall clock is offset by what ``clock`` says
    (``+2``, ``-6``: seconds), read again at every call, so a test may step it."""
    return {"LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(clock),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "SESSIONWARE_TEST_RELATIVE_SLEEP": "1"}  # tests/support/apps/counter.py says why


@pytest.fixture(params=["sqlite", "azure", "dynamodb", "ravendb"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """The stores that judge leases by their client's clock."""
    if request.param == "azure":
        return AzureTarget(request.getfixturevalue("own_azurite"))
    if request.param == "dynamodb":
        return DynamoDBTarget(request.getfixturevalue("own_dynamodb"))
    if request.param == "ravendb":
        return RavenDBTarget(request.getfixturevalue("own_ravendb"))
    return SQLiteTarget(tmp_path)


@contextmanager
def two_apps(target: Target, clock: Path) -> Iterator[tuple[httpx.AsyncClient, ...]]:
    """Clients of two app processes over ``target``'s store: the first on the
    host's clock, the second on ``clock``'s."""
    env = {"SESSIONWARE_TEST_STORE": target.spec, "SESSIONWARE_TEST_LEASE": str(LEASE)}
    with ExitStack() as stack:
        servers = [stack.enter_context(serve(server("async"), env)),
                   stack.enter_context(serve(server("async"), {**env, **skewed(clock)}))]
        yield tuple(httpx.AsyncClient(base_url=s.url, timeout=30) for s in servers)


@pytest.mark.parametrize("skew", [0.5, 2.0, LEASE])
async def test_apps_whose_clocks_disagree_lose_nothing(
    clocked: Target, skew: float, tmp_path: Path
) -> None:
    """Below a lease, a skew costs nothing: the one ahead judges the other's
    leases shorter by the skew, and they are released long before. At a
    lease, it judges them lapsed at once and takes the session over: the
    holder's commit is refused (409), never lost."""
    clock = tmp_path / "clock"
    clock.write_text(f"+{skew}\n")
    with two_apps(clocked, clock) as (host, ahead):
        async with host, ahead:
            cookie = session_cookie(await host.get("/add?id=first"))
            assert cookie
            async with Traffic(host, cookie, others=(ahead,)) as traffic:
                await until(lambda: len(traffic.answers) >= 40, 60)
            traffic.report(f"ahead {skew} s {clocked.name}")
            if skew < LEASE:
                assert traffic.count(200) == len(traffic.answers), traffic.statuses()
            check_outcomes(traffic.answers, await stored_ids(host, cookie))


async def test_a_clock_stepping_back_mid_traffic_loses_nothing(
    clocked: Target, tmp_path: Path
) -> None:
    """The second app's clock steps back by two leases: the leases it takes
    look lapsed to the first, which may take its sessions over (409 for the
    late commit), and nothing acknowledged is lost."""
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    with two_apps(clocked, clock) as (host, stepping):
        async with host, stepping:
            cookie = session_cookie(await host.get("/add?id=first"))
            assert cookie
            async with Traffic(host, cookie, others=(stepping,)) as traffic:
                await until(lambda: traffic.count(200) >= 10, 30)
                clock.write_text(f"-{STEP_BACK}\n")
                stepped_at = len(traffic.answers)
                await until(lambda: len(traffic.answers) >= stepped_at + 30, 60)
            traffic.report(f"stepped back {STEP_BACK} s {clocked.name}")
            check_outcomes(traffic.answers, await stored_ids(host, cookie))
