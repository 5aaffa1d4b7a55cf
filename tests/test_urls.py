"""store_from_url / store_from_env: each scheme builds the store it names, with
the URL's options, and it serves sessions; every mistake is a
ConfigurationError that names it (and never shows a password)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis

import sessionware
import sessionware.stores
from sessionware import ConfigurationError, store_from_env, store_from_url
from sessionware.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore, Store


async def round_trip(store: Store) -> None:
    async with store:
        assert await store.create("k", b'{"a":1}', ttl=60)
        assert await store.read("k") == b'{"a":1}'


def test_exported_from_both_modules() -> None:
    assert sessionware.store_from_url is sessionware.stores.store_from_url is store_from_url


async def test_memory() -> None:
    store = store_from_url("memory://")
    assert type(store) is MemoryStore
    await round_trip(store)


async def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url("sqlite:///sessions.db")
    assert type(store) is SQLiteStore
    await round_trip(store)
    assert (tmp_path / "sessions.db").exists()


async def test_sqlite_absolute_path_and_options(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    store = store_from_url(f"sqlite:///{path}?table=web_sessions&busy_timeout=2.5"
                           "&sweep_interval=30")
    assert repr(store) == f"SQLiteStore({str(path)!r}, table='web_sessions')"
    await round_trip(store)
    with __import__("sqlite3").connect(path) as db:
        assert db.execute("select count(*) from web_sessions").fetchone() == (1,)


async def test_redis_options_and_driver_options(redis_url: str) -> None:
    store = store_from_url(f"{redis_url}?prefix=urltest:&lean=false&socket_timeout=2"
                           "&health_check_interval=30")
    assert type(store) is RedisStore
    await round_trip(store)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys("urltest:*") == [b"urltest:{k}"]
    finally:
        client.close()


async def test_redis_cluster_scheme(redis_cluster_url: str) -> None:
    url = redis_cluster_url.replace("redis://", "redis+cluster://") + "?prefix=urlcluster:"
    store = store_from_url(url)
    assert type(store) is RedisStore
    assert type(store._client).__name__ == "RedisCluster"
    await round_trip(store)


async def test_postgres_options_and_libpq_options(postgres_dsn: str) -> None:
    store = store_from_url(f"{postgres_dsn}?table=url_sessions&listen=false&sslmode=disable"
                           "&application_name=urltest")
    assert type(store) is PostgresStore
    await round_trip(store)
    with psycopg.connect(postgres_dsn) as db:
        assert db.execute("select count(*) from url_sessions").fetchone() == (1,)


async def test_postgres_synchronous_commit(postgres_dsn: str) -> None:
    from sessionware._async.stores.postgres import ASYNC_COMMIT

    for value, off in (("off", True), ("false", True), ("on", False), ("true", False)):
        store = store_from_url(f"{postgres_dsn}?table=url_commit&synchronous_commit={value}")
        assert type(store) is PostgresStore
        assert (ASYNC_COMMIT in store._sql["commit"]) is off
        assert ASYNC_COMMIT not in store._sql["acquire"]
    await round_trip(store_from_url(f"{postgres_dsn}?table=url_commit&synchronous_commit=off"))


async def test_postgres_short_scheme(postgres_dsn: str) -> None:
    store = store_from_url(postgres_dsn.replace("postgresql://", "postgres://")
                           + "?table=url_short")
    assert type(store) is PostgresStore
    await round_trip(store)


def test_env(tmp_path: Path) -> None:
    store = store_from_env({"SESSIONWARE_STORE_URL": f"sqlite:///{tmp_path}/env.db"})
    assert type(store) is SQLiteStore
    with pytest.raises(ConfigurationError, match="set SESSIONWARE_STORE_URL"):
        store_from_env({})
    with pytest.raises(ConfigurationError, match="set SESSIONWARE_STORE_URL"):
        store_from_env({"SESSIONWARE_STORE_URL": "  "})


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "SESSIONWARE_STORE_URL", "memory://")
    assert type(store_from_env()) is MemoryStore


@pytest.mark.parametrize(("url", "message"), [
    ("sessions.db", "unknown scheme; use one of memory://, sqlite:///PATH"),
    ("mysql://h/db", "unknown scheme"),
    ("sqlite:///s.db?tabel=x", "unknown option 'tabel'; SQLiteStore takes: busy_timeout, "
                               "sweep_interval, table"),
    ("sqlite:///s.db?busy_timeout=soon", r"option busy_timeout='soon': use a number"),
    ("sqlite:///s.db?busy_timeout=nan", r"option busy_timeout='nan': use a finite number"),
    ("sqlite:///s.db?table=a&table=b", "option 'table' given twice"),
    ("sqlite:///s.db?table=bad-name", "table name 'bad-name'"),
    ("sqlite://host/s.db", "a SQLite URL has no host"),
    ("sqlite://", "name the database file"),
    ("sqlite:///:memory:", "use memory://"),
    ("memory:///x", "memory:// takes no host or path"),
    ("memory://?size=1", "unknown option 'size'; MemoryStore takes: none"),
    ("redis://127.0.0.1:1/0?lean=maybe", r"option lean='maybe': use true or false"),
    ("redis://127.0.0.1:1/0?max_connections=1.5", "use a whole number"),
    ("redis://127.0.0.1:1/0?prefx=a", "unknown option 'prefx'; RedisStore takes: cluster, "
                                      "lean, max_connections, prefix, socket_timeout"),
    ("postgresql://u@127.0.0.1:1/db?tabel=x", 'invalid URI query parameter: "tabel"'),
    ("postgresql://u@127.0.0.1:1/db?max_connections=ten", "option max_connections='ten'"),
    ("postgresql://u@127.0.0.1:1/db?synchronous_commit=local",
     r"option synchronous_commit='local': use true or false"),
])
def test_errors_name_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        store_from_url(url)


@pytest.mark.parametrize("url", [
    "ftp://user:hunter2-secret@host/x",
    "postgresql://user:hunter2-secret@127.0.0.1:1/db?bogus=1",
    "azure://DefaultEndpointsProtocol=https;AccountName=a;AccountKey=hunter2-secret?bogus=1",
])
def test_errors_never_show_a_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url)
    assert "hunter2" not in str(caught.value)


def test_not_a_string() -> None:
    with pytest.raises(ConfigurationError, match="must be a string, not PosixPath"):
        store_from_url(Path("s.db"))  # type: ignore[arg-type]


# The stores with a driver: each scheme builds its class.


def test_dynamodb() -> None:
    store = store_from_url("dynamodb://sessions?region=eu-west-1"
                           "&endpoint_url=http%3A%2F%2F127.0.0.1%3A8000")
    assert type(store).__name__ == "DynamoDBStore"


def test_azure() -> None:
    # Azurite's well-known development account: the key holds '+', '/' and '='.
    connection_string = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1")
    store = store_from_url(f"azure://{connection_string}?table=sessions&container=blobs")
    assert type(store).__name__ == "AzureTableStore"


def test_mongodb() -> None:
    store = store_from_url("mongodb://127.0.0.1:27017/?database=app&collection=sessions")
    assert type(store).__name__ == "MongoDBStore"


def test_ravendb() -> None:
    store = store_from_url("ravendb://127.0.0.1:8080/app?collection=WebSessions&timeout=2")
    assert repr(store) == ("RavenDBStore('http://127.0.0.1:8080/app', "
                           "collection='WebSessions')")
    secured = store_from_url("ravendb+https://db.example:443/app")
    assert repr(secured) == "RavenDBStore('https://db.example:443/app', collection='Sessions')"
    for url in ("ravendb://127.0.0.1:8080", "ravendb://127.0.0.1:8080/a/b", "ravendb:///app"):
        with pytest.raises(ConfigurationError, match="ravendb://HOST:PORT/DATABASE"):
            store_from_url(url)
    with pytest.raises(ConfigurationError, match="collection"):
        store_from_url("ravendb://127.0.0.1:8080/app?collection=no-dash")


# -- the middlewares take their store from the configuration ---------------------------


def test_flask_takes_its_store_from_the_config(tmp_path: Path) -> None:
    from flask import Flask, session

    from sessionware.flask import Sessionware

    app = Flask(__name__)
    app.config.update(SECRET_KEY="k" * 32,
                      SESSIONWARE_STORE_URL=f"sqlite:///{tmp_path / 'flask.db'}")

    @app.get("/inc")
    def inc() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    Sessionware(app)
    client = app.test_client()
    assert [client.get("/inc").text for _ in range(2)] == ["1", "2"]
    assert (tmp_path / "flask.db").exists()


def test_flask_without_a_store_says_how_to_give_one() -> None:
    from flask import Flask

    from sessionware.flask import Sessionware

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "k" * 32
    with pytest.raises(ConfigurationError, match="SESSIONWARE_STORE_URL"):
        Sessionware(app)


def test_the_middlewares_take_their_store_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sessionware import SessionMiddleware, WSGISessionMiddleware

    monkeypatch.setenv("SESSIONWARE_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    asgi = SessionMiddleware(lambda *a: None, secret_key="k" * 32)  # type: ignore[arg-type]
    assert isinstance(asgi.core.store, SQLiteStore)
    wsgi = WSGISessionMiddleware(lambda e, s: [], secret_key="k" * 32)
    assert type(wsgi.core.store).__name__ == "SyncSQLiteStore"
    monkeypatch.delenv("SESSIONWARE_STORE_URL")
    unset = SessionMiddleware(lambda *a: None, secret_key="k" * 32)  # type: ignore[arg-type]
    assert "SESSIONWARE_STORE_URL" in str(unset.misconfigured)  # it fails the startup
