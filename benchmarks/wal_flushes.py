"""Where /inc's time goes on a durable PostgreSQL server: WAL flushes.

    python -m benchmarks.wal_flushes [--seconds S] [--peers sw-postgres-durable,...]

For each peer (``sw-postgres-durable``, ``sw-postgres-async-commit``, or
``sw-postgres`` on the benchmark's fsync=off server), on a fresh server:
uvicorn (uvloop + httptools, 1 worker), 1,000 sessions, wrk on ``/inc`` as
the benchmark runs it, and around the wrk run the server's own counters:
``pg_stat_wal`` (WAL flushes, ``wal_sync``, and the time in them, with
``track_wal_io_timing`` on) and ``pg_stat_database`` (commits). Prints per
request: commits, flushes, and the milliseconds per second of wall time the
server spent flushing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import clients
from benchmarks.servers import AppServer, Postgres

_COUNTERS = """SELECT w.wal_sync, w.wal_sync_time, w.wal_write, w.wal_bytes::float8,
       d.xact_commit
FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = current_database()"""


def counters(dsn: str) -> dict[str, float]:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SELECT pg_stat_force_next_flush()")  # this backend's own counts
        row = db.execute(_COUNTERS).fetchone()
    assert row is not None
    return dict(zip(("wal_sync", "wal_sync_ms", "wal_write", "wal_bytes", "commits"),
                    map(float, row), strict=True))


def measure(peer: str, seconds: float, workdir: str) -> dict[str, Any]:
    postgres = Postgres(workdir, durable=peer != "sw-postgres")
    app = None
    try:
        with psycopg.connect(postgres.dsn, autocommit=True) as db:
            db.execute("ALTER SYSTEM SET track_wal_io_timing = on")
            db.execute("SELECT pg_reload_conf()")
        env = {"BENCH_PEER": peer, "BENCH_DELAY": "0", "BENCH_POSTGRES_DSN": postgres.dsn}
        app = AppServer("asgi", "uvicorn-std", 1, env, workdir)
        cookies = Path(workdir, f"{peer}.cookies")
        cookies.write_text("\n".join(clients.create_sessions(app.base, 1000)) + "\n")
        clients.wrk(app.base, "/inc", str(cookies), 1, 32)  # warm-up
        before = counters(postgres.dsn)
        got = clients.wrk(app.base, "/inc", str(cookies), seconds, 32)
        after = counters(postgres.dsn)
    finally:
        if app is not None:
            app.stop()
        postgres.stop()
    delta = {k: after[k] - before[k] for k in after}
    requests = max(got["requests"], 1)
    wall = got["duration_us"] / 1e6
    return {"peer": peer, "rps": got["rps"], "p50_ms": got["p50_us"] / 1000,
            "commits_per_request": delta["commits"] / requests,
            "flushes_per_request": delta["wal_sync"] / requests,
            "us_per_flush": 1000 * delta["wal_sync_ms"] / max(delta["wal_sync"], 1),
            "flush_ms_per_s": delta["wal_sync_ms"] / wall,
            "wal_bytes_per_request": delta["wal_bytes"] / requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--peers", default="sw-postgres-durable,sw-postgres-async-commit")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sessionware-wal-")
    print("| peer | /inc req/s | p50 ms | commits/request | WAL flushes/request "
          "| µs per flush | flushing, ms per s | WAL bytes/request |")
    print("|---|---|---|---|---|---|---|---|")
    for peer in args.peers.split(","):
        r = measure(peer, args.seconds, workdir)
        print(f"| {peer} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['commits_per_request']:.2f} "
              f"| {r['flushes_per_request']:.2f} | {r['us_per_flush']:.0f} "
              f"| {r['flush_ms_per_s']:.0f} | {r['wal_bytes_per_request']:.0f} |", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
