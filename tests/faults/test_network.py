"""The network's faults between the app and its store: a partition, latency,
loss (a black-holed pool: test_black_hole.py). The store is reached through
the nemesis (``nemesis.py``: a TCP proxy of the tests' own, and why), on
every store with a server (Redis Cluster too), on both faces; the history
check is the fault suite's (``history.py``): every 200 stored exactly once,
every refusal absent, every "unknown" at most once.

Each test prints what its clients saw (``-s``): docs/failures.md publishes it.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.faults.history import Traffic, check_outcomes, in_process, stored_ids, until
from tests.faults.nemesis import Nemesis
from tests.faults.targets import NetworkTarget

STORE_TIMEOUT = 0.5
# the worst case of one store call: cut off within 1.25 x store_timeout, then
# settled for up to another store_timeout (docs/failures.md)
WORST_CALL = 2.25 * STORE_TIMEOUT
LOCK_TIMEOUT = 2.0
# a request whose write went unconfirmed leaves its lease to lapse
LEASE = 1.0

Networked = tuple[NetworkTarget, Nemesis]


@pytest.mark.parametrize("fault", ["partition", "loss"])
async def test_a_network_fault_mid_traffic_is_answered_truthfully(
    networked: Networked, face: str, fault: str
) -> None:
    """A partition of 2 x store_timeout, healed; or 5% of the chunks lost
    (each costing a retransmission of 200 to 1000 ms, more than store_timeout)
    for a while. Every answer tells the truth, and service comes back."""
    target, nemesis = networked
    async with in_process(target.store(nemesis.via), face, store_timeout=STORE_TIMEOUT,
                          lock_timeout=LOCK_TIMEOUT, lease_ttl=LEASE) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 5, 20)
            if fault == "partition":
                with nemesis.partitioned():
                    await asyncio.sleep(2 * STORE_TIMEOUT)  # the fault's length
            else:
                nemesis.lose(0.05)
                at = len(traffic.answers)
                await until(lambda: len(traffic.answers) >= at + 30, 60)
                nemesis.heal()
            healed_at = len(traffic.answers)
            await until(lambda: traffic.count(200, healed_at) >= 5, 30)
        traffic.report(f"{fault} {target.name} {face}")
        check_outcomes(traffic.answers, await stored_ids(client, cookie))


@pytest.mark.faces("async")
async def test_300_ms_of_latency_slows_requests_but_loses_nothing(networked: Networked) -> None:
    """300 ms ± 100 ms each way, under a store_timeout that allows for it:
    every answer is 200 and stored. (The async face only: the drivers' time
    budget is the same on both, and each request pays several round trips.)"""
    target, nemesis = networked
    async with in_process(target.store(nemesis.via), "async", store_timeout=3.0,
                          lock_timeout=30.0) as (_, client, _, cookie):
        nemesis.delay(0.3, 0.1)
        async with Traffic(client, cookie, clients=2) as traffic:
            await until(lambda: len(traffic.answers) >= 4, 60)
        nemesis.heal()
        traffic.report(f"latency {target.name} async")
        assert traffic.count(200) == len(traffic.answers), traffic.statuses()
        check_outcomes(traffic.answers, await stored_ids(client, cookie))
