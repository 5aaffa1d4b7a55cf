"""Stores named by a string, for apps started in another process (uvicorn).

``sqlite:<path>``, ``redis:<url>``, ``redis-cluster:<host:port>,<host:port>...``
"""

from __future__ import annotations

from sessionware.stores import Store


def store_from_spec(spec: str) -> Store:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from sessionware.stores import SQLiteStore

        return SQLiteStore(where)
    if kind == "redis":
        from sessionware.stores import RedisStore

        return RedisStore(url=where)
    if kind == "redis-cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        from sessionware.stores import RedisStore

        nodes = [ClusterNode(h, int(p)) for h, p in (n.rsplit(":", 1) for n in where.split(","))]
        return RedisStore(client=RedisCluster(startup_nodes=nodes))
    raise ValueError(f"unknown store spec {spec!r}")
