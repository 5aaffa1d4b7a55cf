"""The benchmark app, one per ASGI peer, for uvicorn: ``--factory benchmarks.apps_asgi:make_app``.

The same three endpoints on every peer:

* ``GET /inc``: read ``n`` from the session, sleep ``delay`` seconds (query
  parameter, default ``$BENCH_DELAY``), write ``n + 1``, return it;
* ``GET /n``: return ``n``;
* ``GET /hello``: does not touch the session;
* ``GET /wait``: sleeps ``delay`` seconds without touching the session (ten
  of one user at once: in parallel, or one after another behind the lock).

``GET /__stats`` returns the store-operation counts (sessionware peers, whose
store class is wrapped by :func:`benchmarks.counting.counting_store`).

Environment: ``BENCH_PEER`` (``plain``, ``starlette``, ``starsessions``,
``sw-sqlite``, ``sw-redis``, ``sw-postgres``, ``sw-azure``, ``sw-mongodb``, ``sw-dynamodb``,
``sw-redis-lazy``: lock mode ``lazy``, the session loaded only by /inc and /n;
``sw-redis-driver``, ``sw-postgres-driver``: the store on its driver's own path;
``sw-postgres-durable``: ``sw-postgres``'s app with ``lean_connections=8``, the bench
gives it a durable server; ``sw-postgres-async-commit``: there, also
``synchronous_commit=False``),
``BENCH_REDIS_URL``, ``BENCH_SQLITE``, ``BENCH_POSTGRES_DSN``, ``BENCH_AZURE``,
``BENCH_MONGODB_URL``, ``BENCH_DYNAMODB_ENDPOINT``, ``BENCH_DELAY``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from benchmarks.counting import COUNTS, sessionware_store


def _sessionware_path() -> str:
    import sessionware

    return str(sessionware.__file__)


SECRET = "benchmark-secret-0123456789abcdef"
DEFAULT_DELAY = float(os.environ.get("BENCH_DELAY", "0"))
DURABLE_LEAN_CONNECTIONS = 8
PEERS = ("plain", "starlette", "starsessions", "sw-sqlite", "sw-redis", "sw-postgres",
         "sw-azure", "sw-mongodb", "sw-dynamodb", "sw-redis-lazy", "sw-redis-driver",
         "sw-postgres-driver", "sw-ravendb", "sw-postgres-durable", "sw-postgres-async-commit")

Loader = Callable[[Request], Awaitable[None]]


async def _no_load(request: Request) -> None:
    return None


def routes(load: Loader, session: bool = True, load_read: Loader | None = None) -> list[Route]:
    load_read = load_read or load
    async def inc(request: Request) -> Response:
        delay = float(request.query_params.get("delay", DEFAULT_DELAY))
        if not session:
            if delay:
                await asyncio.sleep(delay)
            return PlainTextResponse("1")
        await load(request)
        n = request.session.get("n", 0)
        if delay:
            await asyncio.sleep(delay)
        request.session["n"] = n + 1
        return PlainTextResponse(str(n + 1))

    async def read_n(request: Request) -> Response:
        if not session:
            return PlainTextResponse("0")
        await load_read(request)
        return PlainTextResponse(str(request.session.get("n", 0)))

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    async def wait(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("delay", DEFAULT_DELAY)))
        return PlainTextResponse("waited")

    async def stats(request: Request) -> Response:
        return PlainTextResponse(json.dumps({**COUNTS, "_sessionware": _sessionware_path()}))

    return [Route("/inc", inc), Route("/n", read_n), Route("/hello", hello),
            Route("/wait", wait), Route("/__stats", stats)]


def make_app(peer: str | None = None) -> Any:
    peer = peer or os.environ["BENCH_PEER"]
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    if peer == "plain":
        return Starlette(routes=routes(_no_load, session=False))
    if peer == "starlette":
        from starlette.middleware.sessions import SessionMiddleware

        return Starlette(routes=routes(_no_load), middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, https_only=False)])
    if peer == "starsessions":
        from redis.asyncio import Redis
        from starsessions import SessionMiddleware as StarSessions
        from starsessions import load_session
        from starsessions.stores.redis import RedisStore as StarRedis

        store = StarRedis(connection=Redis.from_url(redis_url))

        async def load(request: Request) -> None:
            await load_session(request)

        return Starlette(routes=routes(load), middleware=[
            Middleware(StarSessions, store=store, cookie_https_only=False, lifetime=1200)])
    if peer in ("sw-sqlite", "sw-redis", "sw-postgres", "sw-azure", "sw-mongodb", "sw-dynamodb",
                "sw-redis-driver", "sw-postgres-driver", "sw-ravendb", "sw-postgres-durable",
                "sw-postgres-async-commit"):
        from sessionware import Rule, SessionMiddleware

        kind = peer.removeprefix("sw-").split("-")[0]
        options: dict[str, Any] = {}
        if peer in ("sw-postgres-durable", "sw-postgres-async-commit"):
            # as docs/stores/postgres.md advises for a server that flushes at each commit
            options["lean_connections"] = DURABLE_LEAN_CONNECTIONS
        if peer.endswith("-async-commit"):
            options["synchronous_commit"] = False
        store = sessionware_store(kind, lean=not peer.endswith("-driver"), **options)
        modes = [Rule("read", paths=["/n"]), Rule("none", paths=["/__stats"])]
        return Starlette(routes=routes(_no_load), middleware=[
            Middleware(SessionMiddleware, store=store, secret_key=SECRET, lock_mode=modes)])
    if peer == "sw-redis-lazy":
        from sessionware import SessionMiddleware
        from sessionware import load_session as load_sw

        async def load_locked(request: Request) -> None:
            await load_sw(request)

        async def load_snapshot(request: Request) -> None:
            await load_sw(request, "read")

        store = sessionware_store("redis")
        return Starlette(routes=routes(load_locked, load_read=load_snapshot), middleware=[
            Middleware(SessionMiddleware, store=store, secret_key=SECRET, lock_mode="lazy")])
    raise ValueError(f"unknown ASGI peer {peer!r}; one of {PEERS}")
