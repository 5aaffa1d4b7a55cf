"""Stores named by a string, for apps started in another process (uvicorn).

``sqlite:<path>``, ``redis:<url>``, ``redis-cluster:<url of any node>``,
``postgres:<dsn>``, ``azure:<connection string>``, ``mongodb:<url>``,
``dynamodb:<endpoint>`` (DynamoDB Local: any credentials), ``ravendb:<url>/<database>``
(``ravendb-4.1:`` for the tests' 4.1 server: the client then says it is 4.1.0)
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
        from sessionware.stores import RedisStore

        return RedisStore(where, cluster=True)
    if kind == "postgres":
        from sessionware.stores import PostgresStore

        return PostgresStore(where)
    if kind == "azure":
        from sessionware.stores import AzureTableStore

        return AzureTableStore(where)
    if kind == "mongodb":
        from sessionware.stores import MongoDBStore

        return MongoDBStore(where)
    if kind == "dynamodb":
        from sessionware.stores import DynamoDBStore

        return DynamoDBStore(endpoint_url=where, region_name="us-east-1",
                             aws_access_key_id="sessionware", aws_secret_access_key="sessionware")
    if kind in ("ravendb", "ravendb-4.1"):
        from sessionware.stores import RavenDBStore
        from tests.support.servers.ravendb import speak_41

        if kind == "ravendb-4.1":
            speak_41()
        url, _, database = where.rpartition("/")
        return RavenDBStore(url, database)
    raise ValueError(f"unknown store spec {spec!r}")
