"""Redis fails over to a replica that had not received the last writes.

A primary, and a real replica (valkey-server ``--replicaof``) that hears the
primary through a nemesis delaying its replication stream by
:data:`REPLICATION_LAG` (async replication on loopback is too quick to lag by
itself). The app reaches the primary through a nemesis too, its virtual
address. Mid-traffic the replication link is black-holed and the primary
SIGKILLed at once, the replica promoted (``REPLICAOF NO ONE``) and the app's
address moved to it, as Sentinel or an operator would: no restart of the app.
Then a new replica joins the new primary (as the old one would, once back).

Without ``wait_replicas`` the writes acknowledged within the lag before the
crash are lost, and the test counts them (docs/failures.md publishes the
count). With ``wait_replicas=1`` a write is acknowledged only once the
replica has it: the same crash loses nothing, and the full history check holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import closing

import pytest

from sessionware import ConfigurationError, LeaseLost, StoreUnavailable
from sessionware.stores import Lease, RedisStore
from tests.faults.history import (
    UNCONFIRMED,
    Traffic,
    check_outcomes,
    in_process,
    stored_ids,
    until,
)
from tests.faults.nemesis import Nemesis
from tests.support.servers.redis import HOST, RedisServer, valkey_binary

REPLICATION_LAG = 0.05


def has_data(node: RedisServer) -> bool:
    with node.client() as probe:
        return bool(probe.dbsize())


class Replica(RedisServer):
    """A valkey-server replicating from ``HOST:port`` (a nemesis in front of the primary)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.primary_port = port

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", HOST, str(self.primary_port)]

    def close(self) -> None:
        self.cleanup()

    def in_sync(self) -> bool:
        with self.client() as probe:
            return bool(probe.info("replication")["master_link_status"] == "up")


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, Replica, Nemesis]]:
    """A primary and its replica, connected, through a lagging link."""
    primary = RedisServer()
    primary.start()
    link = Nemesis(primary.port).start()
    link.delay(REPLICATION_LAG)
    replica = Replica(link.via[primary.port])
    try:
        replica.start()
        yield primary, replica, link
    finally:
        replica.cleanup()
        link.close()
        primary.cleanup()


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_failover_to_a_lagging_replica_loses_only_unreplicated_writes(
    replicated: tuple[RedisServer, Replica, Nemesis], face: str, wait_replicas: int
) -> None:
    primary, replica, link = replicated
    await until(replica.in_sync, 20)
    newcomer = Replica(replica.port)
    with Nemesis(primary.port) as address, closing(newcomer):
        store = RedisStore(f"redis://{HOST}:{address.via[primary.port]}/0",
                           socket_timeout=2.0, wait_replicas=wait_replicas, wait_timeout=0.5)
        async with in_process(store, face, store_timeout=1.0, lock_timeout=5.0,
                              lease_ttl=1.0) as (_, client, _, cookie):
            await until(lambda: has_data(replica), 10)  # only the last writes may be lost
            async with Traffic(client, cookie) as traffic:
                await until(lambda: traffic.count(200) >= 10, 30)
                link.black_hole()  # what the replica has not heard yet, it never will
                assert primary.process is not None
                os.kill(primary.process.pid, signal.SIGKILL)
                failed_at = len(traffic.answers)
                with replica.client() as admin:
                    await asyncio.to_thread(admin.execute_command, "REPLICAOF", "NO", "ONE")
                address.redirect(primary.port, replica.port)
                # a new replica joins (as the old primary would, once back): with
                # wait_replicas, writes are acknowledged again once it has synced
                await asyncio.to_thread(newcomer.start)
                await until(lambda: traffic.count(200, failed_at) >= 5, 30)
            stored = await stored_ids(client, cookie)
    lost = lost_writes(f"failover wait_replicas={wait_replicas} {face}", traffic, stored)
    assert not (wait_replicas and lost), lost


def lost_writes(what: str, traffic: Traffic, stored: list[str]) -> list[str]:
    """The ids answered 200 and not stored, which the test prints; every
    other answer passes the history check."""
    lost = [i for i, r in traffic.answers.items() if r.status_code == 200 and i not in stored]
    unknown = sum(UNCONFIRMED in r.text for r in traffic.answers.values())
    print(f"\n{what}: {dict(sorted(traffic.statuses().items()))}, {unknown} unknown, "
          f"{len(lost)} acknowledged writes lost of {traffic.count(200)}")
    check_outcomes({i: r for i, r in traffic.answers.items() if i not in lost}, stored)
    return lost


async def test_a_write_no_replica_acknowledged_is_never_a_success(
    redis_server: RedisServer
) -> None:
    """WAIT's timeout: applied on the primary, not replicated: the store says
    it may have been applied (the core settles it, then answers unknown)."""
    async with RedisStore(redis_server.url, prefix="faults-wait:", wait_replicas=1,
                          wait_timeout=0.05) as store:
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas") as refused:
            await store.create("k-no-replica", b"x", ttl=60)
        assert refused.value.maybe_applied
        assert await store.read("k-no-replica") == b"x"  # on the primary all the same
        # a refusal wrote nothing: it is answered as it is, whatever the replicas
        assert await store.create("k-no-replica", b"y", ttl=60) is False
        with pytest.raises(LeaseLost):
            await store.commit(Lease("k-no-replica", 1, b""), b"z", ttl=60)


def test_wait_replicas_is_for_a_single_server() -> None:
    with pytest.raises(ConfigurationError, match="single server"):
        RedisStore(f"redis://{HOST}:1/0", cluster=True, wait_replicas=1)
    with pytest.raises(ConfigurationError, match="wait_timeout"):
        RedisStore(f"redis://{HOST}:1/0", wait_replicas=1, wait_timeout=0)


# -- a Redis Cluster shard ---------------------------------------------------------


def _replication(node: RedisServer) -> dict[str, object]:
    with node.client() as probe:
        return dict(probe.info("replication"))


@pytest.fixture
def cluster_with_replicas() -> Iterator[list[RedisServer]]:
    """Three primaries, each with a replica, that notice a dead node within 1 s."""
    nodes = [RedisServer(cluster=True) for _ in range(6)]
    try:
        for node in nodes:
            node.start()
        subprocess.run([valkey_binary("valkey-cli"), "--cluster", "create",
                        *(f"{HOST}:{node.port}" for node in nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for node in nodes:
            with node.client() as admin:
                admin.config_set("cluster-node-timeout", 1000)
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


def _cluster_ready(nodes: list[RedisServer]) -> bool:
    for node in nodes:
        with node.client() as probe:
            if probe.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False
        info = _replication(node)
        if info["role"] == "slave" and info["master_link_status"] != "up":
            return False
    return True


async def test_a_cluster_shard_failover_mid_traffic(
    cluster_with_replicas: list[RedisServer], face: str
) -> None:
    """The primary of the session's shard is SIGKILLed; the cluster promotes its
    replica by itself, and the store follows it (no restart). Replication is
    asynchronous, so what the replica had not received is lost: counted."""
    nodes = cluster_with_replicas
    await until(lambda: _cluster_ready(nodes), 20)
    store = RedisStore(nodes[0].url, cluster=True, socket_timeout=1.0)
    async with in_process(store, face, store_timeout=1.0, lock_timeout=5.0,
                          lease_ttl=1.0) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 10, 30)
            shard = next(node for node in nodes
                         if _replication(node)["role"] == "master" and has_data(node))
            assert shard.process is not None
            os.kill(shard.process.pid, signal.SIGKILL)
            failed_at = len(traffic.answers)
            await until(lambda: traffic.count(200, failed_at) >= 5, 30)
        stored = await stored_ids(client, cookie)
    lost_writes(f"cluster shard failover {face}", traffic, stored)
