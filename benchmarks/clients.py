"""Client side of the measurements: session creation, the lost-update burst
with a browser-like cookie jar, sequential timing, and wrk runs."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from http.cookiejar import CookieJar
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent


class _NoJar(CookieJar):
    """Keeps httpx from managing cookies: the benchmark's jar does it."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Any) -> None:
        return None


def _client(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(cookies=_NoJar(), **kwargs)


class BrowserJar:
    """One browser's cookies for one host: a request carries what the jar holds
    when it is sent; every response's Set-Cookie overwrites (or deletes) it."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def update(self, response: httpx.Response) -> None:
        for raw in response.headers.get_list("set-cookie"):
            parsed = SimpleCookie()
            parsed.load(raw)
            for name, morsel in parsed.items():
                expired = morsel["max-age"] in ("0", "-1") or (
                    morsel["expires"] and "1970" in morsel["expires"])
                if expired or morsel.value in ("", "''", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value


async def _create(base: str, count: int, concurrency: int = 32) -> list[str]:
    """``count`` fresh sessions (each from one GET /inc); their Cookie header values."""
    out: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    async with _client(base_url=base, timeout=30,
                       limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one() -> None:
            async with sem:
                jar = BrowserJar()
                jar.update(await client.get("/inc"))
                if jar.cookies:
                    out.append(jar.header()["cookie"])
        await asyncio.gather(*(one() for _ in range(count)))
    return out


def create_sessions(base: str, count: int) -> list[str]:
    return asyncio.run(_create(base, count))


async def _lost_updates(base: str, k: int, delay: float) -> dict[str, Any]:
    jar = BrowserJar()
    async with _client(base_url=base, timeout=60,
                       limits=httpx.Limits(max_connections=k + 1,
                                           max_keepalive_connections=k + 1)) as client:
        first = await client.get("/inc", params={"delay": delay})
        jar.update(first)
        statuses: list[int] = []

        async def one() -> None:
            response = await client.get("/inc", params={"delay": delay}, headers=jar.header())
            statuses.append(response.status_code)
            jar.update(response)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(k)))
        elapsed = time.perf_counter() - t0
        final = await client.get("/n", headers=jar.header())
    ok = sum(1 for s in statuses if s == 200)
    expected = 1 + ok
    observed = int(final.text) if final.status_code == 200 else -1
    return {"k": k, "ok": ok, "refused": k - ok, "expected": expected,
            "observed": observed, "lost": expected - observed, "elapsed": elapsed}


def lost_updates(base: str, k: int, delay: float) -> dict[str, Any]:
    return asyncio.run(_lost_updates(base, k, delay))


async def _sequential(base: str, count: int, delay: float) -> list[float]:
    jar = BrowserJar()
    times = []
    async with _client(base_url=base, timeout=30) as client:
        jar.update(await client.get("/inc", params={"delay": delay}))
        for _ in range(count):
            t0 = time.perf_counter()
            response = await client.get("/inc", params={"delay": delay}, headers=jar.header())
            times.append(time.perf_counter() - t0)
            jar.update(response)
    return times


def per_request_time(base: str, count: int, delay: float) -> float:
    """Median time of one /inc, alone (no contention): the serial bound's unit."""
    return statistics.median(asyncio.run(_sequential(base, count, delay)))


def wrk(base: str, path: str, cookies_file: str, seconds: float, connections: int,
        threads: int = 1) -> dict[str, Any]:
    env = {**os.environ, "BENCH_PATH": path, "BENCH_COOKIES": cookies_file}
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(HERE / "wrk" / "rotate.lua"), base + path]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON "):])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk gave no summary: {done.stdout}\n{done.stderr}")


async def _trips_requests(base: str, plan: list[tuple[str, bool]],
                          jar: BrowserJar) -> list[int]:
    statuses = []
    async with _client(base_url=base, timeout=30) as client:
        for path, with_cookie in plan:
            response = await client.get(path, headers=jar.header() if with_cookie else {})
            statuses.append(response.status_code)
            if with_cookie:
                jar.update(response)
    return statuses


def requests(base: str, plan: list[tuple[str, bool]], jar: BrowserJar) -> list[int]:
    return asyncio.run(_trips_requests(base, plan, jar))


async def _parallel(base: str, path: str, count: int, delay: float) -> float:
    jar = BrowserJar()
    async with _client(base_url=base, timeout=60,
                       limits=httpx.Limits(max_connections=count,
                                           max_keepalive_connections=count)) as client:
        jar.update(await client.get("/inc", params={"delay": 0}))
        await client.get(path, params={"delay": 0}, headers=jar.header())  # warm
        t0 = time.perf_counter()
        responses = await asyncio.gather(*(
            client.get(path, params={"delay": delay}, headers=jar.header())
            for _ in range(count)))
        elapsed = time.perf_counter() - t0
    if any(r.status_code != 200 for r in responses):
        raise RuntimeError(f"{path}: statuses {sorted({r.status_code for r in responses})}")
    return elapsed


def parallel_time(base: str, path: str, count: int, delay: float) -> float:
    """Seconds for ``count`` requests of one user (one cookie) at once to
    ``path``, each taking ``delay``: about ``delay`` when they run in
    parallel, ``count * delay`` when they run one after another."""
    return asyncio.run(_parallel(base, path, count, delay))
