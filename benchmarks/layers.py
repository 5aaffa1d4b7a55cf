"""Where a locked request's CPU goes, layer by layer, in one process:
``python -m benchmarks.layers [--concurrency 32] [--requests 6400] [--repeats 5]``.

Serves the benchmark's Starlette app by raw ASGI calls (no HTTP server, no
client process), with C sessions' ``/inc`` at once as wrk's connections come,
and prints the app process's CPU per request for each layer added: the app
without sessions, then sessionware on MemoryStore (the middleware and the
core, no I/O), then on SQLiteStore and RedisStore (the store's adapter and its
I/O; the Redis server runs in its own process, so its CPU is not counted,
as under uvicorn with one worker on a machine with a core to spare). Medians
over ``--repeats`` blocks. ``--profile`` adds cProfile's shares of the
MemoryStore request by the middleware's steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import Valkey

LAYERS = ("no session", "memory", "sqlite", "redis")
# the middleware's steps, by the function that holds each (cProfile's cumulative time)
STEPS = {"cookie signature": "unsign", "take the lock and load": "_load",
         "save and release": "commit", "the app and Starlette": "inc"}


def make_app(layer: str) -> tuple[Any, Any]:
    from starlette.applications import Starlette

    from benchmarks.apps_asgi import SECRET, _no_load, routes
    from benchmarks.counting import sessionware_store
    from sessionware import Rule, SessionMiddleware
    from sessionware.stores import MemoryStore

    if layer == "no session":
        return Starlette(routes=routes(_no_load, session=False)), None
    store = MemoryStore() if layer == "memory" else sessionware_store(layer)
    app = SessionMiddleware(Starlette(routes=routes(_no_load)), store=store, secret_key=SECRET,
                            lock_mode=[Rule("read", paths=["/n"])])
    return app, store


async def cpu_per_request(layer: str, concurrency: int, requests: int, repeats: int,
                          profile: cProfile.Profile | None = None) -> float:
    from benchmarks.metrics_overhead import Client

    app, store = make_app(layer)
    clients = [Client(app) for _ in range(concurrency)]
    per_client = requests // concurrency

    async def one(client: Client) -> None:
        for _ in range(per_client):
            await client.get("/inc")

    try:
        await asyncio.gather(*(one(client) for client in clients))  # set up, warm up
        samples = []
        for _ in range(repeats):
            gc.collect()
            started = time.process_time()
            if profile is not None:
                profile.enable()
            await asyncio.gather(*(one(client) for client in clients))
            if profile is not None:
                profile.disable()
            samples.append(1e6 * (time.process_time() - started) / (per_client * concurrency))
        return statistics.median(samples)
    finally:
        if store is not None:
            await store.aclose()


def shares(profile: cProfile.Profile) -> dict[str, float]:
    """Each step's share of the request, by cumulative time."""
    stats: Any = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, name), (_, _, _, ct, _) in stats.items() if name == "__call__")
    found: dict[str, float] = {}
    for step, function in STEPS.items():
        times = [ct for (path, _, name), (_, _, _, ct, _) in stats.items()
                 if name == function and ("sessionware" in path or "benchmarks" in path)]
        found[step] = max(times, default=0.0) / total
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sessionware-layers-")
    valkey = Valkey(workdir)
    os.environ["BENCH_REDIS_URL"] = valkey.url
    os.environ["BENCH_SQLITE"] = str(Path(workdir, "sessions.db"))
    try:
        base = None
        for layer in LAYERS:
            cpu = asyncio.run(cpu_per_request(layer, args.concurrency, args.requests,
                                              args.repeats))
            base = cpu if base is None else base
            print(f"{layer:11} {cpu:7.1f} µs CPU per /inc  (+{cpu - base:6.1f} over the app alone)",
                  flush=True)
        if args.profile:
            profile = cProfile.Profile()
            asyncio.run(cpu_per_request("memory", args.concurrency, args.requests, 1, profile))
            for step, share in shares(profile).items():
                print(f"  memory: {step:24} {100 * share:5.1f}% of the request (cProfile)")
    finally:
        valkey.stop()


if __name__ == "__main__":
    main()
