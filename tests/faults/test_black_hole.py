"""A black-holed connection pool: every connection to the store goes dead
(no answer, no RST, ever), then the network heals. Through the nemesis
(``nemesis.py``), on every store with a server (Redis Cluster too), on both
faces, under the history check (``history.py``). Apart from
``test_network.py`` so that the two files run side by side.
"""

from __future__ import annotations

import time

from tests.faults.history import Traffic, check_outcomes, in_process, stored_ids, until
from tests.faults.targets import RedisClusterTarget
from tests.faults.test_network import LEASE, LOCK_TIMEOUT, STORE_TIMEOUT, WORST_CALL, Networked


async def test_a_black_holed_pool_answers_within_its_deadlines_and_recovers(
    networked: Networked, face: str
) -> None:
    """Every pooled connection goes dead (no answer, no RST, ever): no request
    hangs past its deadlines, each is answered 503 (or 500 where a write's
    outcome is unknown) within them, and once the network heals the app
    serves again with no restart, its dead connections dropped."""
    target, nemesis = networked
    async with in_process(target.store(nemesis.via), face, store_timeout=STORE_TIMEOUT,
                          lock_timeout=LOCK_TIMEOUT, lease_ttl=LEASE) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 5, 20)
            nemesis.black_hole()
            holed_at = len(traffic.answers)
            await until(lambda: len(traffic.answers) >= holed_at + 8, 30)
            nemesis.heal()
            healed, healed_at = time.monotonic(), len(traffic.answers)
            await until(lambda: traffic.count(200, healed_at) >= 1, 30)
            recovered = time.monotonic() - healed
            await until(lambda: traffic.count(200, healed_at) >= 5, 30)
        traffic.report(f"black hole {target.name} {face}")
        holed = list(traffic.answers)[holed_at + 4:healed_at]  # sent into the hole
        assert holed and all(traffic.answers[i].status_code in (500, 503) for i in holed), \
            traffic.statuses()
        # no answer from the hole on, during it or after the heal, took longer
        bound = LOCK_TIMEOUT + LEASE + 2 * WORST_CALL
        if face == "sync" and isinstance(target, RedisClusterTarget):
            # redis-py's path: socket_timeout alone bounds the sync face's calls,
            # and a topology refresh tries every node (docs/stores/redis.md)
            bound += 2 * len(target.nodes) * target.socket_timeout
        slowest = max(traffic.took[i] for i in list(traffic.answers)[holed_at:])
        print(f"slowest answer from the hole on {slowest:.2f} s (bound {bound:.2f} s)")
        assert slowest < bound, slowest
        print(f"first 200 {recovered:.2f} s after the heal")
        check_outcomes(traffic.answers, await stored_ids(client, cookie))
