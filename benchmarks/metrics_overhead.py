"""What metrics cost when nobody collects them: ``python -m benchmarks.metrics_overhead``.

Issue 16's target: with metrics disabled, ``/inc`` costs at most 2% more.
"Disabled" has two forms, and both are measured against the build that
measures nothing at all:

* ``absent``: the OpenTelemetry API cannot be imported (sessionware without
  its ``otel`` extra). The core holds no instruments; what is left of
  metrics is an ``is None`` test at each measuring point. The baseline.
* ``api``: the API installed, no SDK configured: every instrument is the
  API's no-op proxy, called at each measuring point. The usual "disabled"
  state of an app that has the extra (or a dependency that pulls it in) and
  never set up a meter provider. **The target: ``api`` / ``absent`` ≤ 1.02.**
* ``sdk``: an SDK ``MeterProvider`` with an in-memory reader, everything
  recorded: the price of metrics turned on, for comparison only.

The three apps live in one process and take turns, block by block in a
shuffled order, so that drift of the machine (frequency, a neighbour's load)
falls on all three alike; each block's ratio is taken within the block. A
request is a raw ASGI call of ``GET /inc`` with the session cookie, with no
HTTP client or server around it: their cost would dilute the ratio, so this
is stricter than a wrk run through uvicorn (whose spread, tens of percent
between repetitions here, could not resolve 2% anyway). Two stores: RedisStore
on a valkey-server of its own, the benchmark's ``/inc``; and MemoryStore, the
cheapest request there is, so the largest share metrics can take (they cost
the same CPU whatever the store) and no other process's noise. The cost
measured is this process's CPU time per request (valkey's is another
process's), with wall time beside it. The results join
``results/latest.json`` (key ``metrics_overhead``, one entry per store) and
the report is rendered again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.apps_asgi import SECRET, _no_load, routes
from benchmarks.report import write
from benchmarks.servers import Valkey

RESULTS_KEY = "metrics_overhead"
VARIANTS = ("absent", "api", "sdk")


@contextmanager
def api_absent() -> Iterator[None]:
    """As if the OpenTelemetry API were not installed: its import fails."""
    saved = {name: module for name, module in sys.modules.items()
             if name == "opentelemetry" or name.startswith("opentelemetry.")}
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["opentelemetry"]
        sys.modules.update(saved)


def make_app(variant: str, redis_url: str | None) -> tuple[Any, Any]:
    """The benchmark's sw-redis app for ``variant`` (on a MemoryStore without
    ``redis_url``), and its store."""
    from starlette.applications import Starlette

    from sessionware import Rule, SessionMiddleware
    from sessionware.stores import MemoryStore, RedisStore

    store = RedisStore(redis_url) if redis_url else MemoryStore()
    options: dict[str, Any] = {}
    if variant == "sdk":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        options["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
    modes = [Rule("read", paths=["/n"])]

    def build() -> Any:
        # made here, not through Starlette's lazily built middleware stack, so
        # that the core (and its Metrics) exists before api_absent() ends
        return SessionMiddleware(Starlette(routes=routes(_no_load)), store=store,
                                 secret_key=SECRET, lock_mode=modes, **options)

    if variant == "absent":
        with api_absent():
            app = build()
    else:
        app = build()
    core = app.core
    assert (core.metrics is None) == (variant == "absent"), variant
    return app, store


class Client:
    """Raw ASGI calls of one app, with the session cookie it set."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookie: bytes | None = None

    async def get(self, path: str) -> bytes:
        headers = [(b"host", b"bench")]
        if self.cookie is not None:
            headers.append((b"cookie", self.cookie))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        body: list[bytes] = []
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message["headers"]:
                    if name == b"set-cookie":
                        self.cookie = value.split(b";", 1)[0]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, send)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        return b"".join(body)


async def block(client: Client, requests: int, path: str = "/inc") -> tuple[float, float]:
    """CPU and wall microseconds per request over ``requests`` calls of ``path``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await client.get(path)
    return (1e6 * (time.process_time() - cpu) / requests,
            1e6 * (time.perf_counter() - wall) / requests)


async def measure(redis_url: str | None, blocks: int, requests: int) -> dict[str, Any]:
    made = {variant: make_app(variant, redis_url) for variant in VARIANTS}
    clients = {variant: Client(app) for variant, (app, _) in made.items()}
    try:
        for client in clients.values():  # set up, make the session, warm up
            for _ in range(200):
                await client.get("/inc")
        samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        order = list(VARIANTS)
        for _ in range(blocks):
            random.shuffle(order)
            for variant in order:
                samples[variant].append(await block(clients[variant], requests))
        counted = int(await clients["api"].get("/n"))
        assert counted == 200 + blocks * requests, counted  # every /inc was a real one
    finally:
        for _, store in made.values():
            await store.aclose()

    def ratios(variant: str, which: int) -> list[float]:
        return [a[which] / b[which] for a, b in zip(samples[variant], samples["absent"],
                                                    strict=True)]

    def extra_us(variant: str) -> float:
        """CPU µs per request metrics add: the same whatever the store."""
        return statistics.median(a[0] - b[0] for a, b in zip(samples[variant],
                                                             samples["absent"], strict=True))

    return {
        "blocks": blocks, "requests": requests,
        "store": "RedisStore" if redis_url else "MemoryStore",
        "cpu_us": {v: statistics.median(s[0] for s in samples[v]) for v in VARIANTS},
        "wall_us": {v: statistics.median(s[1] for s in samples[v]) for v in VARIANTS},
        "cpu_ratio": {v: ratios(v, 0) for v in ("api", "sdk")},
        "cpu_extra_us": {v: extra_us(v) for v in ("api", "sdk")},
        "wall_ratio": {v: ratios(v, 1) for v in ("api", "sdk")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/latest.json")
    args = parser.parse_args()
    results = [asyncio.run(measure(None, args.blocks, args.requests))]
    valkey = Valkey(tempfile.mkdtemp(prefix="sessionware-metrics-"))
    try:
        results.append(asyncio.run(measure(valkey.url, args.blocks, args.requests)))
    finally:
        valkey.stop()
    print(json.dumps(results, indent=1), flush=True)
    with open(args.out) as f:
        data = json.load(f)
    data[RESULTS_KEY] = results
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    write(data)


if __name__ == "__main__":
    main()
