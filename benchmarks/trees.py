"""Two trees of sessionware side by side, in CPU per request:
``python -m benchmarks.trees BEFORE AFTER [--stores sqlite,redis,...] [--seeds N]
[--concurrency C]``.

For a change that touches the hot path (the store kernel issue asks `/inc`
and `/n` within 3% per store). A wrk run through a server cannot resolve
3% on this machine (its repetitions spread 20-40%), so this measures what a
change of the library's code changes: the CPU the application process spends
per request. Each tree (a checkout: the folder holding ``sessionware/``) gets
a worker process of its own per store, which serves raw ASGI calls of the
benchmark's app (``/inc`` locked, ``/n`` read) in blocks (one request at a
time, or with ``--concurrency C`` C sessions' requests at once, as wrk's
connections come: what a store that groups the work of one loop turn is
measured by); the parent asks
the two workers for a block in turn, in a shuffled order, so that the
machine's drift falls on both alike, and takes each block's ratio within its
pair. A process's own layout (its hash seed, where its objects fall) moves
its CPU per request by up to 40% here, so each store is measured by several
pairs of workers, each pair with a hash seed of its own, and the ratio is
the median over every pair's blocks. After its blocks each worker checks
that its session counted every ``/inc`` (no update lost). The store's
server runs in its own process, started here once and shared by both trees:
its CPU is not counted. Store operations per request
are counted too (the round trips: 2 for ``/inc``, 1 for ``/n``), and the
Python function calls per request (cProfile's count: the same on any machine,
so it shows a change of the code path where CPU time cannot).

Prints a table (median CPU µs per request of each tree, the median of the
pairs' ratios, operations and calls per request) and writes the raw numbers
as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import ROOT, Azurite, DynamoDB, Mongoeco, Postgres, Valkey

STORES = ("memory", "sqlite", "redis", "postgres", "azure", "mongodb", "dynamodb")
PATHS = ("/inc", "/n")


def servers(stores: list[str], workdir: str) -> tuple[dict[str, str], list[Any]]:
    """Start the servers ``stores`` need; the environment that names them."""
    env: dict[str, str] = {}
    started: list[Any] = []
    if "redis" in stores:
        valkey = Valkey(workdir)
        started.append(valkey)
        env["BENCH_REDIS_URL"] = valkey.url
    if "postgres" in stores:
        postgres = Postgres(workdir)
        started.append(postgres)
        env["BENCH_POSTGRES_DSN"] = postgres.dsn
    if "azure" in stores:
        azurite = Azurite(workdir)
        started.append(azurite)
        env["BENCH_AZURE"] = azurite.connection_string
    if "mongodb" in stores:
        mongo = Mongoeco(workdir)
        started.append(mongo)
        env["BENCH_MONGODB_URL"] = mongo.url
    if "dynamodb" in stores:
        dynamo = DynamoDB(workdir)
        started.append(dynamo)
        env["BENCH_DYNAMODB_ENDPOINT"] = dynamo.endpoint
    return env, started


class Worker:
    """A worker process serving one tree's app on one store."""

    def __init__(self, tree: str, store: str, env: dict[str, str], workdir: str,
                 seed: int, concurrency: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.trees", "--worker", tree, store, str(concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, **env, "BENCH_SQLITE": str(Path(workdir) / f"{store}.db"),
                 "PYTHONHASHSEED": str(seed)})
        self.tree = self.ask({"ready": True})["sessionware"]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker of {request} died")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def compare(trees: list[str], store: str, env: dict[str, str], seeds: int, blocks: int,
            requests: int, concurrency: int = 1) -> dict[str, Any]:
    samples: dict[str, list[list[dict[str, float]]]] = {path: [[], []] for path in PATHS}
    where: list[str] = []
    for seed in range(1, seeds + 1):
        workdirs = [tempfile.mkdtemp(prefix=f"sessionware-trees-{i}-") for i in range(2)]
        workers = [Worker(tree, store, env, workdir, seed, concurrency)
                   for tree, workdir in zip(trees, workdirs, strict=True)]
        try:
            where = [w.tree for w in workers]
            for path in PATHS:
                for _ in range(blocks):
                    order = [0, 1]
                    random.shuffle(order)
                    for i in order:
                        samples[path][i].append(
                            workers[i].ask({"path": path, "requests": requests}))
            for path in PATHS:  # the Python calls per request: the same whatever the machine
                for i, worker in enumerate(workers):
                    samples[path][i][-1]["calls"] = worker.ask({"calls": path})["calls"]
            for worker in workers:  # every /inc counted: no update lost
                assert worker.ask({"check": True})["lost"] == 0
        finally:
            for worker in workers:
                worker.stop()
    result: dict[str, Any] = {"store": store, "trees": where, "seeds": seeds,
                              "concurrency": concurrency}
    for path, (before, after) in samples.items():
        ratios = [b["cpu_us"] / a["cpu_us"] for a, b in zip(before, after, strict=True)]
        result[path] = {
            "cpu_us": [statistics.median(s["cpu_us"] for s in side) for side in (before, after)],
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "operations": [statistics.median(s["operations"] for s in side)
                           for side in (before, after)],
            "calls": [statistics.median(s["calls"] for s in side if "calls" in s)
                      for side in (before, after)],
        }
    return result


def serve(tree: str, store: str, concurrency: int) -> None:
    """The worker: sessionware from ``tree``, the app and its client from here."""
    assert "sessionware" not in sys.modules
    only = Path(tempfile.mkdtemp(prefix="sessionware-tree-"))  # nothing else of the tree
    (only / "sessionware").symlink_to(Path(tree, "sessionware").resolve())
    sys.path.insert(0, str(only))
    import sessionware

    asyncio.run(_serve(store, str(Path(sessionware.__file__).resolve()), concurrency))


async def _serve(kind: str, where: str, concurrency: int) -> None:
    from starlette.applications import Starlette

    from benchmarks.apps_asgi import SECRET, _no_load, routes
    from benchmarks.counting import COUNTS, counting_store, sessionware_store
    from benchmarks.metrics_overhead import Client
    from sessionware import Rule, SessionMiddleware
    from sessionware.stores import MemoryStore

    store = counting_store(MemoryStore)() if kind == "memory" else sessionware_store(kind)
    app = SessionMiddleware(Starlette(routes=routes(_no_load)), store=store, secret_key=SECRET,
                            lock_mode=[Rule("read", paths=["/n"])])
    clients = [Client(app) for _ in range(concurrency)]
    client = clients[0]
    increments = 200
    for _ in range(increments):  # set up, make the sessions, warm up
        await clients[_ % concurrency].get("/inc")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ready"):
            answer: dict[str, Any] = {"sessionware": where}
        elif request.get("calls"):
            answer = {"calls": await _calls(client, request["calls"])}
            increments += 100 if request["calls"] == "/inc" else 0
        elif request.get("check"):
            counted = sum([int(await each.get("/n")) for each in clients])
            answer = {"lost": increments - counted}
        else:
            requests = request["requests"] // concurrency * concurrency
            increments += requests if request["path"] == "/inc" else 0
            COUNTS.clear()
            cpu_us, wall_us = await _block(clients, requests, request["path"])
            answer = {"cpu_us": cpu_us, "wall_us": wall_us,
                      "operations": sum(COUNTS.values()) / requests}
        print(json.dumps(answer), flush=True)
    await store.aclose()


async def _block(clients: list[Any], requests: int, path: str) -> tuple[float, float]:
    """CPU and wall microseconds per request over ``requests`` calls of
    ``path``, made by the clients at once, each one at a time."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()

    async def one_client(client: Any) -> None:
        for _ in range(requests // len(clients)):
            await client.get(path)

    await asyncio.gather(*(one_client(client) for client in clients))
    return (1e6 * (time.process_time() - cpu) / requests,
            1e6 * (time.perf_counter() - wall) / requests)


async def _calls(client: Any, path: str, requests: int = 100) -> float:
    """Python function calls per request of ``path``, counted by cProfile."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        await client.get(path)
    profile.disable()
    return int(pstats.Stats(profile).total_calls) / requests  # type: ignore[attr-defined]


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres")
    parser.add_argument("--seeds", type=int, default=5, help="pairs of workers")
    parser.add_argument("--blocks", type=int, default=4, help="per pair and path")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="sessions whose requests run at once (wrk's connections)")
    parser.add_argument("--out", default="benchmarks/results/trees.json")
    args = parser.parse_args()
    stores = args.stores.split(",")
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}; use {','.join(STORES)}")
    env, started = servers(stores, tempfile.mkdtemp(prefix="sessionware-trees-"))
    results = []
    try:
        for store in stores:
            result = compare([args.before, args.after], store, env, args.seeds, args.blocks,
                             args.requests, args.concurrency)
            results.append(result)
            for path in PATHS:
                cell = result[path]
                print(f"{store:9} {path:5} before {cell['cpu_us'][0]:7.1f} µs  "
                      f"after {cell['cpu_us'][1]:7.1f} µs  after/before {cell['ratio']:.3f}  "
                      f"operations {cell['operations'][0]:.2f} / {cell['operations'][1]:.2f}  "
                      f"calls {cell['calls'][0]:.0f} / {cell['calls'][1]:.0f}",
                      flush=True)
    finally:
        for server in started:
            server.stop()
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
