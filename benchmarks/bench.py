"""Run every measurement, repetitions in the outer loop, and write the raw
results (JSON) and the report (docs/benchmarks.md, docs/benchmarks/*.png).

    python -m benchmarks.bench [--quick] [--reps N] [--seconds S] [--only PEER,...]

Normally started by ``benchmarks/run.sh``, which installs what this needs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import clients, contention
from benchmarks.counting import RespProxy
from benchmarks.servers import (
    ROOT,
    AppServer,
    Azurite,
    DynamoDB,
    Mongoeco,
    Postgres,
    RavenDB,
    Valkey,
)

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Peer:
    name: str       # BENCH_PEER
    label: str      # for humans
    kind: str       # asgi | wsgi
    store: str      # none | cookie | redis | sqlite | postgres | azure | mongodb | dynamodb
    #                 | ravendb
    sessionware: bool = False
    session: bool = True
    default: bool = True  # in a run without --only
    # the server configurations it runs under; default: all of its kind's. A
    # store on an emulator runs under one: its numbers measure the emulator
    # more than the store, and more configurations would only lengthen the run.
    servers: tuple[tuple[str, int], ...] | None = None
    # its server with the stock durable settings (PostgreSQL: fsync and
    # synchronous_commit on) rather than the benchmark's fsync=off
    durable: bool = False


PEERS = [
    Peer("plain", "no session (ceiling)", "asgi", "none", session=False),
    Peer("starlette", "Starlette SessionMiddleware (signed cookie)", "asgi", "cookie"),
    Peer("starsessions", "starsessions + Redis", "asgi", "redis"),
    Peer("sw-sqlite", "sessionware + SQLiteStore", "asgi", "sqlite", sessionware=True),
    Peer("sw-redis", "sessionware + RedisStore", "asgi", "redis", sessionware=True),
    Peer("sw-postgres", "sessionware + PostgresStore (server fsync=off)", "asgi", "postgres",
         sessionware=True),
    # the same on a server with PostgreSQL's stock settings (fsync, synchronous_commit
    # on): every commit waits for its WAL flush, so the store runs with 8 lean
    # connections (their flushes shared); then also with the store's
    # synchronous_commit=False (its writes but acquire do not wait)
    Peer("sw-postgres-durable", "sessionware + PostgresStore(lean_connections=8) "
         "(durable server: stock settings)", "asgi", "postgres", sessionware=True, durable=True),
    Peer("sw-postgres-async-commit", "sessionware + PostgresStore(lean_connections=8, "
         "synchronous_commit=False) (durable server)", "asgi", "postgres", sessionware=True,
         durable=True),
    Peer("sw-azure", "sessionware + AzureTableStore (Azurite)", "asgi", "azure",
         sessionware=True, servers=(("uvicorn", 1),)),
    # on the mongoeco emulator (a Python process, no real mongod can be had
    # here): its numbers measure the emulator more than MongoDB
    Peer("sw-mongodb", "sessionware + MongoDBStore (mongoeco emulator)", "asgi", "mongodb",
         sessionware=True, servers=(("uvicorn", 1),)),
    Peer("sw-redis-lazy", "sessionware + RedisStore, lock mode lazy", "asgi", "redis",
         sessionware=True),
    # the stores on their drivers' own paths (lean=False), side by side with
    # the lean paths they would replace (run with --only)
    Peer("sw-redis-driver", "sessionware + RedisStore on redis-py's path", "asgi", "redis",
         sessionware=True, default=False),
    Peer("sw-postgres-driver", "sessionware + PostgresStore on psycopg's path (fsync=off)",
         "asgi",
         "postgres", sessionware=True, default=False),
    Peer("sw-dynamodb", "sessionware + DynamoDBStore (DynamoDB Local)", "asgi", "dynamodb",
         sessionware=True, servers=(("uvicorn", 1),)),
    # a real server, but RavenDB 4.1 (the one that runs here, on .NET 8): the current
    # server's numbers may differ
    Peer("sw-ravendb", "sessionware + RavenDBStore (measured on a RavenDB 4.1 server)", "asgi",
         "ravendb", sessionware=True, servers=(("uvicorn", 1),)),
    Peer("flask-plain", "Flask, no session (ceiling)", "wsgi", "none", session=False),
    Peer("flask-session", "Flask-Session + Redis", "wsgi", "redis"),
    Peer("sw-flask-sqlite", "sessionware Flask + SQLiteStore", "wsgi", "sqlite",
         sessionware=True),
    Peer("sw-flask-redis", "sessionware Flask + RedisStore", "wsgi", "redis",
         sessionware=True),
    # Django (benchmarks/apps_django.py): side by side in a run of their own, --django
    # (run.sh does, into results/django.json), not in the main run
    *(Peer(name, label, "django", store, sessionware=name.startswith("sw-"), default=False)
      for name, label, store in (
          ("django-cache", "Django cache engine + Redis (RedisCache)", "redis"),
          ("django-db", "Django db engine + SQLite", "sqlite"),
          ("sw-django-redis", "sessionware Django + RedisStore", "redis"),
          ("sw-django-sqlite", "sessionware Django + SQLiteStore", "sqlite"))),
]
DJANGO = [p.name for p in PEERS if p.kind == "django"]
SERVERS = {"asgi": [("uvicorn", 1), ("uvicorn", 2), ("uvicorn-std", 1)],
           "wsgi": [("sync", 2), ("gthread", 2)], "django": [("sync", 2), ("gthread", 2)]}


def flask_driver_present() -> bool:
    return importlib.util.find_spec("sessionware.flask") is not None


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    versions = {}
    for dist in ("sessionware", "starlette", "starsessions", "flask", "flask-session", "django",
                 "uvicorn", "gunicorn", "redis", "hiredis", "psycopg", "psycopg-binary",
                 "psycopg-pool", "httpx", "itsdangerous",
                 "orjson", "uvloop", "httptools", "matplotlib"):
        try:
            from importlib.metadata import version
            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "not installed"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    valkey = subprocess.run([__import__("benchmarks.servers").servers.valkey_binary(),
                             "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "sessionware"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(), "python": platform.python_version(),
        "versions": versions, "wrk": (wrk_version.stdout + wrk_version.stderr).split("\n")[0],
        "valkey": valkey, "git_commit": commit + (" (sessionware/ modified)" if dirty else ""),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="sessionware-bench-")
        self.records: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.log = open(os.path.join(self.workdir, "bench.log"), "w")  # noqa: SIM115

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)
        self.log.write(f"[{stamp}] {text}\n")

    def env_for(self, peer: Peer, valkey: Valkey | None, tag: str,
                redis_url: str | None = None, postgres: Postgres | None = None,
                azurite: Azurite | None = None, mongodb: Mongoeco | None = None,
                dynamodb: DynamoDB | None = None,
                ravendb: RavenDB | None = None) -> dict[str, str]:
        env = {"BENCH_PEER": peer.name, "BENCH_DELAY": "0"}
        if ravendb is not None:
            env["BENCH_RAVENDB"] = ravendb.url
        if azurite is not None:
            env["BENCH_AZURE"] = azurite.connection_string
        if mongodb is not None:
            env["BENCH_MONGODB_URL"] = mongodb.url
        if dynamodb is not None:
            env["BENCH_DYNAMODB_ENDPOINT"] = dynamodb.endpoint
        if postgres is not None:
            env["BENCH_POSTGRES_DSN"] = postgres.dsn
        if valkey is not None:
            env["BENCH_REDIS_URL"] = redis_url or valkey.url
        if peer.store == "sqlite":
            env["BENCH_SQLITE"] = os.path.join(self.workdir, f"{tag}.db")
        return env

    # -- one server configuration, one repetition ---------------------------------

    def serve_and_measure(self, rep: int, peer: Peer, server: str, workers: int) -> None:
        a = self.args
        tag = f"{peer.name}-{server}{workers}-r{rep}"
        record: dict[str, Any] = {"rep": rep, "peer": peer.name, "server": server,
                                  "workers": workers}
        valkey = Valkey(self.workdir) if peer.store == "redis" else None
        postgres = (Postgres(self.workdir, durable=peer.durable) if peer.store == "postgres"
                    else None)
        azurite = Azurite(self.workdir) if peer.store == "azure" else None
        mongodb = Mongoeco(self.workdir) if peer.store == "mongodb" else None
        dynamodb = DynamoDB(self.workdir) if peer.store == "dynamodb" else None
        ravendb = RavenDB(self.workdir) if peer.store == "ravendb" else None
        app = None
        try:
            app = AppServer(peer.kind, server, workers,
                            self.env_for(peer, valkey, tag, postgres=postgres, azurite=azurite,
                                         mongodb=mongodb, dynamodb=dynamodb,
                                         ravendb=ravendb),
                            self.workdir)
            if peer.session:
                record["lost"] = [clients.lost_updates(app.base, k, a.delay) for k in a.ks]
                record["per_request"] = clients.per_request_time(app.base, a.serial_n, a.delay)
                if peer.kind == "asgi":
                    record["parallel"] = {
                        "count": a.parallel, "delay": a.parallel_delay,
                        "elapsed": clients.parallel_time(app.base, "/wait", a.parallel,
                                                         a.parallel_delay)}
                cookies = clients.create_sessions(app.base, a.sessions)
            else:
                cookies = []
            cookie_file = os.path.join(self.workdir, f"{tag}.cookies")
            Path(cookie_file).write_text("\n".join(cookies) + "\n")
            record["sessions"] = len(cookies)
            record["wrk"] = {}
            for path in ("/inc", "/hello"):
                clients.wrk(app.base, path, cookie_file, a.warmup, a.connections)
                cpu = app.cpu_seconds()
                got = record["wrk"][path] = clients.wrk(app.base, path, cookie_file, a.seconds,
                                                        a.connections)
                # the app's CPU per request: what the machine's other load moves least
                got["cpu_us"] = 1e6 * (app.cpu_seconds() - cpu) / max(got["requests"], 1)
            inc, hello = record["wrk"]["/inc"], record["wrk"]["/hello"]
            lost = " ".join(f"K{x['k']}:lost={x['lost']},503={x['refused']}"
                            for x in record.get("lost", []))
            self.say(f"  {tag}: /inc {inc['rps']:.0f} rps p99 {inc['p99_us'] / 1000:.1f} ms"
                     f" (errors {inc['status_errors']}), /hello {hello['rps']:.0f} rps; {lost}")
        except Exception as exc:
            self.errors.append(f"{tag}: {exc!r}")
            self.say(f"  {tag}: FAILED {exc!r}")
            self.log.write(traceback.format_exc())
            record["error"] = repr(exc)
        finally:
            if app is not None:
                app.stop()
            if valkey is not None:
                valkey.stop()
            if postgres is not None:
                postgres.stop()
            if azurite is not None:
                azurite.stop()
            if mongodb is not None:
                mongodb.stop()
            if dynamodb is not None:
                dynamodb.stop()
            if ravendb is not None:
                ravendb.stop()
        self.records.append(record)

    # -- round trips (deterministic: once) -------------------------------------------

    def round_trips(self, peer: Peer) -> dict[str, Any]:
        plan = [("/inc", "/inc", True), ("/n", "/n", True), ("/hello", "/hello", True),
                ("/hello (no cookie)", "/hello", False), ("/n (no cookie)", "/n", False),
                ("/inc (no cookie: new session)", "/inc", False)]
        valkey = Valkey(self.workdir) if peer.store == "redis" else None
        postgres = (Postgres(self.workdir, durable=peer.durable) if peer.store == "postgres"
                    else None)
        azurite = Azurite(self.workdir) if peer.store == "azure" else None
        mongodb = Mongoeco(self.workdir) if peer.store == "mongodb" else None
        dynamodb = DynamoDB(self.workdir) if peer.store == "dynamodb" else None
        ravendb = RavenDB(self.workdir) if peer.store == "ravendb" else None
        proxy = RespProxy(valkey.port).start() if valkey else None
        server, workers = SERVERS[peer.kind][0]
        workers = 1
        app = None
        out: dict[str, Any] = {}
        try:
            env = self.env_for(peer, valkey, f"trips-{peer.name}",
                               redis_url=f"redis://127.0.0.1:{proxy.port}/0" if proxy else None,
                               postgres=postgres, azurite=azurite, mongodb=mongodb,
                               dynamodb=dynamodb, ravendb=ravendb)
            app = AppServer(peer.kind, server, workers, env, self.workdir)
            jar = clients.BrowserJar()
            # warm up: connections, script loads, table creation, a first session
            clients.requests(app.base, [(p, c) for _, p, c in plan], jar)
            reps = 5
            for label, path, with_cookie in plan:
                before_proxy = proxy.counts() if proxy else None
                counted = peer.sessionware or peer.name == "django-db"  # its SQL statements
                before_store = self._store_counts(app.base) if counted else None
                statuses = clients.requests(app.base, [(path, with_cookie)] * reps, jar)
                entry: dict[str, Any] = {"statuses": sorted(set(statuses))}
                if proxy and before_proxy is not None:
                    delta = proxy.counts()
                    delta.subtract(before_proxy)
                    cmds = {k: v / reps for k, v in delta.items() if v}
                    entry["redis_commands"] = cmds
                    entry["trips"] = sum(cmds.values())
                if before_store is not None:
                    after = self._store_counts(app.base)
                    ops = {k: (after.get(k, 0) - before_store.get(k, 0)) / reps for k in after}
                    entry["store_ops"] = {k: v for k, v in ops.items() if v}
                    entry.setdefault("trips", sum(v for k, v in ops.items() if k != "wait"))
                if peer.store in ("none", "cookie"):
                    entry["trips"] = 0
                out[label] = entry
        except Exception as exc:
            self.errors.append(f"round trips {peer.name}: {exc!r}")
            self.say(f"  round trips {peer.name}: FAILED {exc!r}")
            self.log.write(traceback.format_exc())
            out["error"] = repr(exc)
        finally:
            if app is not None:
                app.stop()
            if proxy is not None:
                proxy.stop()
            if valkey is not None:
                valkey.stop()
            if postgres is not None:
                postgres.stop()
            if azurite is not None:
                azurite.stop()
            if mongodb is not None:
                mongodb.stop()
            if dynamodb is not None:
                dynamodb.stop()
            if ravendb is not None:
                ravendb.stop()
        return out

    @staticmethod
    def _store_counts(base: str) -> dict[str, float]:
        import httpx
        got = json.loads(httpx.get(base + "/__stats", timeout=10).text)
        got.pop("_sessionware", None)
        return got

    # -- handoff -------------------------------------------------------------------

    def handoff(self, rep: int) -> list[dict[str, Any]]:
        out = []
        valkey = Valkey(self.workdir)
        postgres = Postgres(self.workdir)
        try:
            for store, spec in (("redis", f"redis:{valkey.url}"),
                                ("sqlite", f"sqlite:{self.workdir}/handoff-{rep}.db"),
                                ("postgres", f"postgres:{postgres.dsn}")):
                got = contention.measure(spec, self.args.handoff_rounds)
                for where, samples in got.items():
                    out.append({"rep": rep, "store": store, "where": where,
                                "handoff": [s[0] for s in samples],
                                "after_commit": [s[1] for s in samples]})
                    h = sorted(s[0] for s in samples)
                    self.say(f"  handoff {store}/{where}: p50 {1000 * h[len(h) // 2]:.3f} ms")
        except Exception as exc:
            self.errors.append(f"handoff: {exc!r}")
            self.say(f"  handoff FAILED {exc!r}")
            self.log.write(traceback.format_exc())
        finally:
            valkey.stop()
            postgres.stop()
        return out

    # -- everything ------------------------------------------------------------------

    def main(self) -> dict[str, Any]:
        a = self.args
        started = time.monotonic()
        peers = [p for p in PEERS if (p.name in a.only if a.only else p.default)]
        if not flask_driver_present():
            skipped = [p.name for p in peers if p.kind == "wsgi" and p.sessionware]
            if skipped:
                self.say(f"sessionware.flask is not there yet: skipping {', '.join(skipped)}")
            peers = [p for p in peers if not (p.kind == "wsgi" and p.sessionware)]
        configs = [(p, s, w) for p in peers for s, w in p.servers or SERVERS[p.kind]]
        info = machine()
        self.say(f"{len(configs)} server configurations x {a.reps} repetitions; "
                 f"work dir {self.workdir}")
        trips = {}
        self.say("round trips per request")
        for peer in peers:
            if peer.session:
                trips[peer.name] = self.round_trips(peer)
        handoffs: list[dict[str, Any]] = []
        for rep in range(a.reps):
            self.say(f"repetition {rep + 1}/{a.reps}")
            shift = rep % len(configs)  # rotate the order: no peer always runs first
            for peer, server, workers in configs[shift:] + configs[:shift]:
                self.serve_and_measure(rep, peer, server, workers)
            if not a.django:  # the stores' own measurement, not a framework's
                handoffs += self.handoff(rep)
        result = {
            "machine": info, "settings": {k: v for k, v in vars(a).items() if k != "only"},
            "peers": [vars(p) for p in peers], "servers": SERVERS,
            "records": self.records, "round_trips": trips, "handoff": handoffs,
            "errors": self.errors, "elapsed_s": round(time.monotonic() - started, 1),
        }
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--reps", type=int, help="repetitions (outer loop); default 3")
    parser.add_argument("--seconds", type=float, help="wrk run length; default 3")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None,
                        help="comma-separated peer names (debugging)")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument("--django", action="store_true",
                        help="the Django run: its peers side by side, no handoff, into "
                             "results/django.json (section 6 of the report)")
    parser.add_argument("--sessionware", default=None,
                        help="serve this sessionware source tree instead of the installed "
                             "one (app servers only; for measuring a proposed patch)")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args(argv)
    if args.django:
        args.only = args.only or DJANGO
        args.out = str(RESULTS / "django.json")
    quick = args.quick
    args.reps = args.reps or (1 if quick else 3)
    args.seconds = args.seconds or (1 if quick else 3)
    args.warmup = 1
    args.ks = [20, 50] if quick else [20, 50, 200]
    args.sessions = 200 if quick else 1000
    args.delay = 0.005
    args.serial_n = 10 if quick else 20
    args.connections = 32
    args.handoff_rounds = 50 if quick else 200
    args.parallel = 10  # requests of one user at once to a route without the session
    args.parallel_delay = 0.1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sessionware:
        os.environ["BENCH_SESSIONWARE"] = os.path.abspath(args.sessionware)
    result = Run(args).main()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"raw results: {out}")
    if not args.no_report:
        from benchmarks import report
        # the Django run is section 6 of the main run's report
        report.write(json.loads((RESULTS / "latest.json").read_text()) if args.django
                     else result)
    if result["errors"]:
        print("errors:\n  " + "\n  ".join(result["errors"]), file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
