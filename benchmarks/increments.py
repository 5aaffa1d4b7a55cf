"""Lost updates under the WSGI worker kinds: ``python -m benchmarks.increments``.

16 client threads each increment one shared session 100 times, each thread on
a keep-alive connection of its own, against every sessionware Flask peer under
gunicorn ``sync`` (2 workers) and ``gthread`` (2x8). Every increment answered
200 must be in the final count. The results join ``results/latest.json`` (key
``increments``) and the report is rendered again; ``run.sh`` runs this after
the main benchmark.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
from typing import Any

from benchmarks.bench import PEERS, RESULTS
from benchmarks.report import write
from benchmarks.servers import HOST, AppServer, Valkey

THREADS, EACH = 16, 100
CONFIGS = [("sync", 2), ("gthread", 2)]


def _get(connection: http.client.HTTPConnection, path: str, cookie: str) -> tuple[int, str]:
    connection.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = connection.getresponse()
    return response.status, response.read().decode()


def increments(port: int) -> dict[str, Any]:
    first = http.client.HTTPConnection(HOST, port, timeout=60)
    first.request("GET", "/inc")
    response = first.getresponse()
    response.read()
    cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    answered: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        statuses = [_get(connection, "/inc", cookie)[0] for _ in range(EACH)]
        connection.close()
        with lock:
            answered.extend(statuses)

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = sum(1 for status in answered if status == 200)
    first.close()  # idle all along: the server may have closed it (keep-alive timeout)
    final = http.client.HTTPConnection(HOST, port, timeout=60)
    observed = int(_get(final, "/n", cookie)[1])
    final.close()
    return {"threads": THREADS, "each": EACH, "expected": 1 + ok, "observed": observed,
            "refused": len(answered) - ok}


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="sessionware-increments-")
    runs = []
    for peer in (p for p in PEERS if p.kind == "wsgi" and p.sessionware):
        for server, workers in CONFIGS:
            valkey = Valkey(workdir) if peer.store == "redis" else None
            env = {"BENCH_PEER": peer.name, "BENCH_DELAY": "0",
                   "BENCH_SQLITE": os.path.join(workdir, f"{peer.name}-{server}.db"),
                   **({"BENCH_REDIS_URL": valkey.url} if valkey else {})}
            app = AppServer(peer.kind, server, workers, env, workdir)
            try:
                run = {"peer": peer.name, "server": server, "workers": workers,
                       **increments(int(app.base.rsplit(":", 1)[1]))}
            finally:
                app.stop()
                if valkey is not None:
                    valkey.stop()
            print(json.dumps(run), flush=True)
            runs.append(run)
    latest = RESULTS / "latest.json"
    data = json.loads(latest.read_text())
    data["increments"] = runs
    latest.write_text(json.dumps(data, indent=1))
    write(data)


if __name__ == "__main__":
    main()
