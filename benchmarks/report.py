"""docs/benchmarks.md and docs/benchmarks/*.png from a results JSON.

    python -m benchmarks.report [benchmarks/results/latest.json]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "benchmarks"

ASGI_SW = ("sw-redis", "sw-sqlite", "sw-postgres", "sw-postgres-durable",
           "sw-postgres-async-commit", "sw-azure", "sw-dynamodb", "sw-mongodb",
           "sw-redis-lazy", "sw-ravendb")
WSGI_SW = ("sw-flask-redis", "sw-flask-sqlite")
DJANGO_SW = ("sw-django-redis", "sw-django-sqlite")
# The Django run (python -m benchmarks.bench --django): its own results file,
# rendered as section 6 and in the targets whenever the report is
DJANGO_RESULTS = ROOT / "benchmarks" / "results" / "django.json"


def med(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Iterable[float], fmt: str = "{:.0f}") -> str:
    """median (min-max) over the repetitions."""
    xs = list(xs)
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class Results:
    def __init__(self, data: dict[str, Any]) -> None:
        self.d = data
        self.peers = {p["name"]: p for p in data["peers"]}
        self.ok = [r for r in data["records"] if "error" not in r]

    def label(self, name: str) -> str:
        return self.peers[name]["label"] if name in self.peers else name

    def configs(self, kind: str) -> list[tuple[str, int]]:
        return [tuple(c) for c in self.d["servers"][kind]]  # type: ignore[misc]

    def recs(self, peer: str, server: str, workers: int) -> list[dict[str, Any]]:
        return [r for r in self.ok if r["peer"] == peer and r["server"] == server
                and r["workers"] == workers]

    def rps(self, peer: str, server: str, workers: int, path: str) -> dict[int, float]:
        return {r["rep"]: r["wrk"][path]["rps"] for r in self.recs(peer, server, workers)}

    def ratios(self, a: str, b: str, server: str, workers: int, path: str) -> list[float]:
        """a/b per repetition (the same run), for the repetitions both have."""
        ra, rb = self.rps(a, server, workers, path), self.rps(b, server, workers, path)
        return [ra[k] / rb[k] for k in sorted(ra) if rb.get(k)]

    def server_name(self, server: str, workers: int) -> str:
        if server.startswith("uvicorn"):
            stack = ("uvloop + httptools" if server == "uvicorn-std" else "asyncio + h11")
            return f"uvicorn ({stack}), {workers} worker{'s' if workers > 1 else ''}"
        return f"gunicorn {server}, {workers} workers" + (
            f" x {8} threads" if server == "gthread" else "")


def _chart_throughput(res: Results, kind: str, path: str, name: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    peers = [p for p in res.peers if res.peers[p]["kind"] == kind]
    configs = res.configs(kind)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.55 * len(peers) * len(configs) / 1.6))
    height = 0.8 / len(configs)
    for ci, (server, workers) in enumerate(configs):
        vals, lo, hi = [], [], []
        for p in peers:
            xs = list(res.rps(p, server, workers, path).values()) or [0.0]
            m = med(xs)
            vals.append(m)
            lo.append(m - min(xs))
            hi.append(max(xs) - m)
        ys = [i + ci * height for i in range(len(peers))]
        ax.barh(ys, vals, height, xerr=[lo, hi], capsize=2,
                label=res.server_name(server, workers))
    ax.set_yticks([i + height * (len(configs) - 1) / 2 for i in range(len(peers))])
    ax.set_yticklabels([res.label(p) for p in peers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"GET {path}: requests/s (median, whiskers min-max over repetitions)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / name, dpi=110)
    plt.close(fig)
    return name


def _chart_lost(res: Results) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = defaultdict(list)
    for r in res.ok:
        for x in r.get("lost", []):
            rows[(r["peer"], r["server"], r["workers"], x["k"])].append(x["lost"] / x["k"])
    if not rows:
        return None
    ks = sorted({k[3] for k in rows})
    combos = sorted({k[:3] for k in rows}, key=lambda c: (res.peers[c[0]]["kind"], c))
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.32 * len(combos)))
    height = 0.8 / len(ks)
    for ki, k in enumerate(ks):
        vals = [100 * med(rows.get((*c, k), [0])) for c in combos]
        ax.barh([i + ki * height for i in range(len(combos))], vals, height, label=f"K = {k}")
    ax.set_yticks([i + height * (len(ks) - 1) / 2 for i in range(len(combos))])
    ax.set_yticklabels([f"{res.label(p)} — {res.server_name(s, w)}" for p, s, w in combos],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("updates lost, % of K concurrent /inc of one session (median)")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "lost-updates.png", dpi=110)
    plt.close(fig)
    return "lost-updates.png"


def render(data: dict[str, Any], charts: bool = True) -> str:
    res = Results(data)
    m, s = data["machine"], data["settings"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks: sessionware side by side with what users pick instead\n")
    w("Generated by `benchmarks/run.sh` (`python -m benchmarks.bench`); do not edit by hand. "
      "Raw numbers: `benchmarks/results/latest.json`.\n")
    if s.get("sessionware"):
        w(f"> **Patched run**: the app servers served sessionware from `{s['sessionware']}`, "
          "not the installed tree.\n")
    if s.get("quick"):
        w("> **Smoke run (`--quick`)**: one repetition, short load runs. Indicative only.\n")
    w(f"- Date: {m['date']}; sessionware commit {m['git_commit']}; run took "
      f"{data['elapsed_s'] / 60:.1f} min")
    w(f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}, "
      f"Python {m['python']}")
    w("- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) +
      f"; {m['wrk']}; {m['valkey']}")
    w(f"- Settings: {s['reps']} repetitions (outer loop, server configurations in rotated "
      f"order), wrk {s['seconds']:.0f} s per run after a {s['warmup']} s warm-up, 1 wrk "
      f"thread, {s['connections']} connections, {s['sessions']} pre-created sessions rotated "
      f"per request; correctness runs with a {s['delay'] * 1000:.0f} ms wait inside /inc, "
      "throughput runs with none.")
    w("- Everything runs on this one machine: wrk, the server, and valkey-server share the "
      "CPUs, so absolute numbers are low and the ratios (taken within one repetition) are "
      "what to compare. Medians, with (min-max) over the repetitions.\n")
    if data["errors"]:
        w("**Errors during the run:**\n")
        for e in data["errors"]:
            w(f"- `{e}`")
        w("")

    # ---- targets
    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")
    django = json.loads(DJANGO_RESULTS.read_text()) if DJANGO_RESULTS.exists() else None
    for row in targets(res) + (django_targets(Results(django)) if django else []):
        w("| " + " | ".join(row) + " |")
    w("")
    w(implied(res))

    # ---- lost updates
    w("## 1. Lost updates\n")
    w("One client session sends K concurrent `GET /inc` (each waits 5 ms between reading "
      "and writing `n`) with a browser-like cookie jar: each request carries the cookie the "
      "jar holds when it is sent, each response's Set-Cookie overwrites it. Then `GET /n`. "
      "lost = expected - observed, where expected counts the /inc that answered 200; "
      "'503' are requests refused (lock timeout or queue full), not lost.\n")
    ks = s["ks"]
    out.extend(lost_table(res, ("asgi", "wsgi"), ks))
    w("")
    if charts and (name := _chart_lost(res)):
        w(f"![lost updates](benchmarks/{name})\n")

    # ---- throughput
    w("## 2. Throughput and latency\n")
    w("wrk from a separate process, rotating the pre-created session cookies (one per "
      "request, as 1,000 users would). `/inc` reads and writes the session (no wait); "
      "`/hello` does not touch it but still carries the cookie, as a browser's request "
      "would. For Starlette's signed-cookie sessions wrk replays the cookie it was given, "
      "so each /inc decodes and re-signs a small cookie.\n")
    for kind in ("asgi", "wsgi"):
        out.extend(throughput_tables(res, kind, ASGI_SW if kind == "asgi" else WSGI_SW))
        if charts:
            for path in ("/inc", "/hello"):
                fname = f"throughput-{kind}-{path.strip('/')}.png"
                if _chart_throughput(res, kind, path, fname):
                    w(f"![{kind} {path} throughput](benchmarks/{fname})\n")

    # ---- round trips
    w("## 3. Store round trips per request\n")
    w("Counted once on a one-worker server (they do not vary): Redis commands as seen by a "
      "counting RESP proxy between the app and valkey-server (the same for every Redis "
      "peer); sessionware's store operations also counted by a counting subclass of the "
      "store (SQLite: that count only). Averages over 5 requests, after a warm-up.\n")
    out.extend(trips_table(res, data["round_trips"]))
    w("")

    # ---- contention
    w("## 4. Contention\n")
    w("**Lock handoff** (`benchmarks/contention.py`): a holder has the session's lease, a "
      "waiter asks for it and waits the way sessionware waits (`Store.wait`); the holder "
      "commits. Handoff = waiter holds the lease - holder starts its commit (so it includes "
      "the commit's round trip); 'after commit' = - the holder's commit returned. *local*: "
      "both in one process (the per-process queue hands over, then one acquire); *cross*: "
      "the waiter is another process, as with two server workers.\n")
    w("| store | waiter | handoff p50 ms | handoff p99 ms | after commit p50 ms | samples |")
    w("|---|---|---|---|---|---|")
    groups = defaultdict(lambda: defaultdict(list))
    for h in data["handoff"]:
        groups[(h["store"], h["where"])]["handoff"].append(h["handoff"])
        groups[(h["store"], h["where"])]["after"].append(h["after_commit"])
    for (store, where), g in groups.items():
        p50 = [1000 * pct(x, 0.5) for x in g["handoff"]]
        p99 = [1000 * pct(x, 0.99) for x in g["handoff"]]
        a50 = [1000 * pct(x, 0.5) for x in g["after"]]
        n = sum(len(x) for x in g["handoff"])
        w(f"| {store} | {where} | {spread(p50, '{:.3f}')} | {spread(p99, '{:.2f}')} | "
          f"{spread(a50, '{:.3f}')} | {n} |")
    w("")
    big = max(ks)
    w(f"**{big} increments on one session**: the K={big} burst of section 1, total time "
      f"against the serial bound: {big} x the time of one /inc alone (median of "
      f"{s['serial_n']} sequential requests, same 5 ms wait). A locking library cannot beat "
      "the bound; overhead = total ÷ bound.\n")
    w("| peer | server | one /inc alone ms | serial bound s | total s | total ÷ bound |")
    w("|---|---|---|---|---|---|")
    for kind in ("asgi", "wsgi"):
        for p in [p for p in res.peers if res.peers[p]["kind"] == kind and
                  res.peers[p]["session"]]:
            for server, workers in res.configs(kind):
                recs = [r for r in res.recs(p, server, workers) if "per_request" in r]
                if not recs:
                    continue
                one = [r["per_request"] * 1000 for r in recs]
                bound = [r["per_request"] * big for r in recs]
                total = [x["elapsed"] for r in recs for x in r["lost"] if x["k"] == big]
                ratio = [x["elapsed"] / (r["per_request"] * big)
                         for r in recs for x in r["lost"] if x["k"] == big]
                note = "" if res.peers[p]["sessionware"] else " (no lock: lost updates)"
                w(f"| {res.label(p)}{note} | {res.server_name(server, workers)} | "
                  f"{spread(one, '{:.2f}')} | {spread(bound, '{:.2f}')} | "
                  f"{spread(total, '{:.2f}')} | {spread(ratio, '{:.2f}')} |")
    w("")
    overhead = data.get("metrics_overhead")
    if overhead:
        w(metrics_section(overhead))
    if django:
        w(django_section(django))
    w("## Notes\n")
    w("- uvicorn `--workers 2` runs through `benchmarks/uvicorn_nodelay.py`: uvicorn's "
      "supervisor binds the listening socket with `proto=0`, so asyncio never sets "
      "TCP_NODELAY on accepted connections and every keep-alive request waits for the "
      "client's delayed ACK (~44 ms p50, ~700 req/s for every app, sessions or not; "
      "uvicorn issue #3149, fixed by its PR #3155, which the wrapper applies).")
    w("- uvicorn runs twice over: as the bare install (`--loop asyncio --http h11`) and as "
      "`uvicorn[standard]` installs it (`--loop uvloop --http httptools`, 1 worker), what "
      "most deployments run; gunicorn with 2 workers (sync, and gthread with 8 threads).")
    w("- Flask-Session keeps its defaults (msgspec serialization, `SESSION_PERMANENT=False`); "
      "starsessions uses `load_session` in the handlers that read the session "
      "(so `/hello` costs it nothing) and a 20-minute lifetime.")
    w("- sessionware apps use `lock_mode=[Rule(\"read\", paths=[\"/n\"])]`: `/n` reads a "
      "snapshot, everything else (including `/hello`) locks the session when a cookie "
      "comes with the request.")
    return "\n".join(out) + "\n"


def lost_table(res: Results, kinds: Iterable[str], ks: list[int]) -> list[str]:
    """Section 1's table: lost updates of each peer with a session, by server."""
    lines = ["| peer | server | " + " | ".join(f"K={k} lost" for k in ks) + " | 503s |",
             "|---|---|" + "---|" * len(ks) + "---|"]
    for kind in kinds:
        for p in [p for p in res.peers if res.peers[p]["kind"] == kind and
                  res.peers[p]["session"]]:
            for server, workers in res.configs(kind):
                recs = res.recs(p, server, workers)
                if not recs:
                    continue
                cells = []
                refused = 0
                for k in ks:
                    xs = [x["lost"] for r in recs for x in r["lost"] if x["k"] == k]
                    refused += sum(x["refused"] for r in recs for x in r["lost"] if x["k"] == k)
                    cells.append(spread(xs))
                lines.append(f"| {res.label(p)} | {res.server_name(server, workers)} | "
                             + " | ".join(cells) + f" | {refused} |")
    return lines


def throughput_tables(res: Results, kind: str, sws: Iterable[str]) -> list[str]:
    """Section 2's tables for the peers of ``kind``, one per server, and the
    ratios of sessionware's peers (``sws``) to the others."""
    out: list[str] = []
    w = out.append
    peers = [p for p in res.peers if res.peers[p]["kind"] == kind]
    for server, workers in res.configs(kind):
        if not any(res.recs(p, server, workers) for p in peers):
            continue
        w(f"### {res.server_name(server, workers)}\n")
        w("| peer | /inc req/s | /inc p50 ms | /inc p99 ms | /hello req/s | "
          "/hello p50 ms | /hello p99 ms | non-2xx |")
        w("|---|---|---|---|---|---|---|---|")
        for p in peers:
            recs = res.recs(p, server, workers)
            if not recs:
                continue
            cell = []
            for path in ("/inc", "/hello"):
                cell.append(spread(r["wrk"][path]["rps"] for r in recs))
                cell.append(spread((r["wrk"][path]["p50_us"] / 1000 for r in recs), "{:.1f}"))
                cell.append(spread((r["wrk"][path]["p99_us"] / 1000 for r in recs), "{:.1f}"))
            bad = sum(r["wrk"][path]["status_errors"] + r["wrk"][path]["timeouts"]
                      for r in recs for path in ("/inc", "/hello"))
            w(f"| {res.label(p)} | " + " | ".join(cell) + f" | {bad} |")
        w("")
        others = [p for p in peers if p not in sws]
        rows = []
        for sw in sws:
            if not res.recs(sw, server, workers):
                continue
            for o in others:
                cells = [spread(res.ratios(sw, o, server, workers, path), "{:.2f}x")
                         for path in ("/inc", "/hello")]
                rows.append(f"| {res.label(sw)} | {res.label(o)} | " + " | ".join(cells) + " |")
        if rows:
            w("Ratios (sessionware ÷ peer, per repetition, then median):\n")
            w("| sessionware | vs peer | /inc | /hello |")
            w("|---|---|---|---|")
            out.extend(rows)
            w("")
    return out


def trips_table(res: Results, trips: dict[str, Any]) -> list[str]:
    """Section 3's table: round trips per request of each peer."""
    labels = ["/inc", "/n", "/hello", "/hello (no cookie)", "/n (no cookie)",
              "/inc (no cookie: new session)"]
    lines = ["| peer | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for p, entries in trips.items():
        cells = []
        for lab in labels:
            e = entries.get(lab)
            if not e:
                cells.append("-")
                continue
            detail = e.get("redis_commands") or e.get("store_ops") or {}
            txt = f"{e['trips']:g}"
            if detail:
                txt += " (" + ", ".join(f"{k} {v:g}" for k, v in sorted(detail.items())) + ")"
            cells.append(txt)
        lines.append(f"| {res.label(p)} | " + " | ".join(cells) + " |")
    return lines


def implied(res: Results) -> str:
    """What the throughput targets mean against the ceiling of the same run."""
    def rate(peer: str, server: str, workers: int) -> float:
        return med(res.rps(peer, server, workers, "/inc").values())

    plain, star = rate("plain", "uvicorn", 1), rate("starsessions", "uvicorn", 1)
    fplain, fsess = rate("flask-plain", "sync", 2), rate("flask-session", "sync", 2)
    parts = []
    if plain == plain and star == star:  # not NaN
        parts.append(
            f"In this run starsessions' /inc runs at {star / plain:.2f}x the no-session "
            f"ceiling (uvicorn, 1 worker), so 2x starsessions means {2 * star / plain:.2f}x "
            "the ceiling while making two store round trips")
    if fplain == fplain and fsess == fsess:
        parts.append(
            f"Flask-Session's /inc runs at {fsess / fplain:.2f}x the Flask ceiling "
            f"(gunicorn sync), so 1.5x Flask-Session means {1.5 * fsess / fplain:.2f}x it, "
            "with the same two round trips Flask-Session makes")
    if not parts:
        return ""
    return ("; ".join(parts) + ". Why those are out of reach here, and the profiles: "
            "[benchmarks/profiling.md](../benchmarks/profiling.md).\n")


def targets(res: Results) -> list[list[str]]:
    rows = []
    d = res.d

    def yn(ok: bool | None) -> str:
        return "-" if ok is None else ("**yes**" if ok else "**NO**")

    sw_lost = [(r["peer"], r["server"], r["workers"], x["k"], x["lost"]) for r in res.ok
               if res.peers[r["peer"]]["sessionware"] for x in r.get("lost", [])]
    worst = max((x[4] for x in sw_lost), default=None)
    rows.append(["0 lost updates for sessionware, every store and server",
                 f"max lost {worst} over {len(sw_lost)} bursts" if sw_lost else "not run",
                 yn(None if worst is None else worst == 0)])

    def ratio_row(text: str, a: str, b: str, server: str, workers: int, need: float | None,
                  path: str = "/inc") -> None:
        xs = res.ratios(a, b, server, workers, path)
        if not xs:
            rows.append([text, "not run", "-"])
            return
        rows.append([text, spread(xs, "{:.2f}x"), yn(None if need is None else med(xs) >= need)])

    for server, stack in (("uvicorn-std", "uvloop + httptools"), ("uvicorn", "asyncio + h11")):
        ratio_row(f"/inc RedisStore ≥ 2x starsessions (uvicorn {stack}, 1 worker)", "sw-redis",
                  "starsessions", server, 1, 2.0)
        ratio_row(f"/inc RedisStore ≥ 0.35x no-session ceiling (uvicorn {stack}, 1 worker)",
                  "sw-redis", "plain", server, 1, 0.35)
    for server, stack in (("uvicorn-std", "uvloop + httptools"), ("uvicorn", "asyncio + h11")):
        ratio_row(f"/inc SQLiteStore ≥ 1.0x RedisStore (uvicorn {stack}, 1 worker)",
                  "sw-sqlite", "sw-redis", server, 1, 1.0)
        ratio_row(f"/hello with a cookie, lock mode lazy ≥ 0.9x starsessions (uvicorn {stack}, "
                  "1 worker)", "sw-redis-lazy", "starsessions", server, 1, 0.9, "/hello")
        rows.append(steadiness(res, server, stack))
    ratio_row("/inc SQLiteStore ≥ 1.0x RedisStore (uvicorn asyncio + h11, 2 workers)",
              "sw-sqlite", "sw-redis", "uvicorn", 2, 1.0)
    lazy_trips = d["round_trips"].get("sw-redis-lazy", {}).get("/hello", {}).get("trips")
    rows.append(["/hello with a cookie, lock mode lazy: 0 store round trips",
                 "not run" if lazy_trips is None else f"{lazy_trips:g}",
                 yn(None if lazy_trips is None else lazy_trips == 0)])
    for peer, target in (("sw-redis-lazy", True), ("sw-redis", False)):
        got = [r["parallel"] for r in res.ok if r["peer"] == peer and "parallel" in r]
        if got:
            times = [g["elapsed"] / g["delay"] for g in got]
            what = ("finish in the time of one" if target else
                    "(the default lock mode, for comparison: they take turns)")
            rows.append([f"{got[0]['count']} parallel requests of one user to a route without "
                         f"the session {what}: {res.label(peer)}",
                         spread(times, "{:.1f}") + " request times",
                         yn(med(times) < 2.0) if target else "-"])
    ratio_row("/inc PostgresStore ≥ 0.8x RedisStore (uvicorn asyncio + h11, 1 worker)",
              "sw-postgres", "sw-redis", "uvicorn", 1, 0.8)
    ratio_row("/inc PostgresStore on a durable server ≥ 0.5x RedisStore "
              "(lean_connections=8; uvicorn uvloop+httptools, 1 worker)",
              "sw-postgres-durable", "sw-redis", "uvicorn-std", 1, 0.5)
    ratio_row("(for comparison, not a target) /inc PostgresStore(lean_connections=8, "
              "synchronous_commit=False) on "
              "a durable server vs RedisStore (uvicorn uvloop+httptools, 1 worker)",
              "sw-postgres-async-commit", "sw-redis", "uvicorn-std", 1, None)
    ratio_row("Flask /inc (RedisStore) ≥ 1.0x Flask-Session (gunicorn sync, 2 workers)",
              "sw-flask-redis", "flask-session", "sync", 2, 1.0)
    ratio_row("Flask /inc (RedisStore) ≥ 1.2x Flask-Session (gunicorn gthread, 2x8)",
              "sw-flask-redis", "flask-session", "gthread", 2, 1.2)
    for server, workers in (("sync", "2 workers"), ("gthread", "2x8")):
        ratio_row(f"Flask /inc (SQLiteStore) ≥ 1.2x Flask-Session with Redis (gunicorn "
                  f"{server}, {workers})", "sw-flask-sqlite", "flask-session", server, 2, 1.2)
    for overhead in sorted(d.get("metrics_overhead", []),
                           key=lambda o: o["store"] != "RedisStore"):  # the target first
        xs = overhead["cpu_ratio"]["api"]
        if overhead["store"] == "RedisStore":  # the /inc of the throughput runs
            rows.append(["/inc with metrics disabled (OpenTelemetry API, no SDK) ≤ 1.02x its "
                         "cost without the API (CPU per request, in process, RedisStore; "
                         "section 5)", spread(xs, "{:.3f}x"), yn(med(xs) <= 1.02)])
        else:
            rows.append([f"(for comparison, not a target: the same on {overhead['store']}, "
                         "the cheapest request, where metrics take their largest share)",
                         spread(xs, "{:.3f}x"), "-"])
    for run in d.get("increments", []):
        rows.append([f"0 lost updates, {run['threads']} threads x {run['each']} increments of "
                     f"one session: {res.label(run['peer'])}, gunicorn {run['server']}",
                     f"{run['observed']} of {run['expected']} ({run['refused']} refused)",
                     yn(run["observed"] == run["expected"])])
    for p in (*ASGI_SW, *WSGI_SW):
        t = d["round_trips"].get(p)
        if not t or "error" in t:
            continue
        got = [t.get(k, {}).get("trips") for k in ("/inc", "/n", "/hello (no cookie)")]
        rows.append([f"round trips 2/1/0 (/inc, /n, /hello without cookie): {res.label(p)}",
                     "/".join("?" if g is None else f"{g:g}" for g in got),
                     yn(got == [2, 1, 0])])
    groups = defaultdict(list)
    for h in d["handoff"]:
        groups[(h["store"], h["where"])].append(1000 * pct(h["handoff"], 0.5))
    for (store, where), p50s in groups.items():
        rows.append([f"lock handoff p50 < 1 ms: {store}, {where} waiter",
                     spread(p50s, "{:.3f} ms"), yn(med(p50s) < 1.0)])
    return rows


def django_targets(res: Results) -> list[list[str]]:
    """The Django run's targets: no lost update, and /inc on RedisStore at
    least as fast as Django's cache engine on Redis, under each gunicorn."""
    rows = []
    lost = [x["lost"] for r in res.ok if r["peer"] in DJANGO_SW for x in r.get("lost", [])]
    rows.append(["0 lost updates for sessionware Django (RedisStore, SQLiteStore; gunicorn "
                 "sync and gthread; section 6)",
                 f"max lost {max(lost)} over {len(lost)} bursts" if lost else "not run",
                 "-" if not lost else ("**yes**" if max(lost) == 0 else "**NO**")])
    for server, workers in (("sync", "2 workers"), ("gthread", "2x8")):
        xs = res.ratios("sw-django-redis", "django-cache", server, 2, "/inc")
        rows.append([f"Django /inc (RedisStore) ≥ 1.0x Django's cache engine on Redis "
                     f"(gunicorn {server}, {workers}; section 6)",
                     spread(xs, "{:.2f}x") if xs else "not run",
                     "-" if not xs else ("**yes**" if med(xs) >= 1.0 else "**NO**")])
    return rows


def django_section(data: dict[str, Any]) -> str:
    """Section 6: Django with sessionware against Django's own engines, from
    the Django run's results (``results/django.json``)."""
    res = Results(data)
    m, s = data["machine"], data["settings"]
    out = ["## 6. Django\n",
           "`python -m benchmarks.bench --django` (run by `run.sh`): four Django peers side "
           "by side in one run, each a Django project of `benchmarks/apps_django.py` behind "
           "only its session middleware, under gunicorn (the same client, wrk and "
           "measurements as sections 1 to 3): Django's `cache` engine on its `RedisCache` "
           "and its default `db` engine on SQLite (WAL, a busy timeout, `BEGIN IMMEDIATE`), "
           "against `sessionware.django` on RedisStore and on SQLiteStore. Django's engines "
           "do not lock: their lost updates are the ones issue 25 starts from.\n",
           f"- Date: {m['date']}; sessionware commit {m['git_commit']}; Django "
           f"{m['versions'].get('django', '?')}; {s['reps']} repetitions, wrk "
           f"{s['seconds']:.0f} s per run; run took {data['elapsed_s'] / 60:.1f} min"
           + ("; **smoke run (`--quick`)**" if s.get("quick") else "") + ".",
           *(f"- Error: `{e}`" for e in data["errors"]), "",
           "**Lost updates** (K concurrent `/inc` of one session, 5 ms between read and "
           "write):\n",
           *lost_table(res, ("django",), s["ks"]), "",
           "**Throughput and latency**:\n",
           *throughput_tables(res, "django", DJANGO_SW), *cpu_table(res, "django"),
           "**Round trips per request** (Redis commands through the counting proxy; "
           "sessionware's store operations; for the `db` engine, its SQL statements):\n",
           *trips_table(res, data["round_trips"]), ""]
    return "\n".join(out) + "\n"


def cpu_table(res: Results, kind: str) -> list[str]:
    """The CPU the app's processes spent per request during the wrk runs (the
    store's server apart): what the machine's other load moves least."""
    lines = ["**CPU per request** (the server's processes, user + system, over each wrk run "
             "÷ its requests; the store's server not counted):\n",
             "| peer | server | /inc CPU µs | /hello CPU µs |", "|---|---|---|---|"]
    for p in res.peers:
        for server, workers in res.configs(kind):
            recs = [r for r in res.recs(p, server, workers) if "cpu_us" in r["wrk"]["/inc"]]
            if recs:
                cells = [spread(r["wrk"][path]["cpu_us"] for r in recs)
                         for path in ("/inc", "/hello")]
                lines.append(f"| {res.label(p)} | {res.server_name(server, workers)} | "
                             + " | ".join(cells) + " |")
    return [*lines, ""] if len(lines) > 3 else []


def metrics_section(runs: list[dict[str, Any]]) -> str:
    """Section 5: what metrics cost, by ``benchmarks/metrics_overhead.py``."""
    names = {"absent": "OpenTelemetry API not installed (the baseline)",
             "api": "API installed, no SDK: metrics disabled",
             "sdk": "SDK with an in-memory reader: metrics on"}
    first = runs[0]
    lines = ["## 5. Metrics overhead\n",
             f"`python -m benchmarks.metrics_overhead`: one process, three builds of the "
             f"sw-redis app taking turns in {first['blocks']} blocks of {first['requests']} "
             "raw ASGI calls of `GET /inc` each, in a shuffled order (no HTTP server or "
             "client: their cost would dilute the ratio). On MemoryStore, the cheapest "
             "request, where metrics take their largest share; and on RedisStore, each "
             "build with its own connection to one valkey-server. Each block's ratio is "
             "taken against the baseline's block of the same turn; medians, with (min-max) "
             "over the blocks.\n",
             "| store | build | CPU µs per /inc | CPU µs added | wall µs per /inc | "
             "CPU vs baseline | wall vs baseline |",
             "|---|---|---|---|---|---|---|"]
    for o in runs:
        for variant, name in names.items():
            cpu, wall = o["cpu_us"][variant], o["wall_us"][variant]
            if variant == "absent":
                added, ratios = "-", "1 | 1"
            else:
                added = f"{o['cpu_extra_us'][variant]:.1f}"
                ratios = (f"{spread(o['cpu_ratio'][variant], '{:.3f}x')} | "
                          f"{spread(o['wall_ratio'][variant], '{:.3f}x')}")
            lines.append(f"| {o['store']} | {name} | {cpu:.0f} | {added} | {wall:.0f} | "
                         f"{ratios} |")
    lines.append("\nWhat disabled metrics cost is the same few µs per request whatever "
                 "the store (CPU µs added: the median of the blocks' differences): "
                 "reading the clock around each store operation and calling the API's no-op "
                 "instruments. The target is on RedisStore's /inc, the request the "
                 "throughput runs measure; MemoryStore's, all in process, shows the most "
                 "that cost can weigh.")
    return "\n".join(lines) + "\n"


def steadiness(res: Results, server: str, stack: str) -> list[str]:
    """RedisStore's /inc spread over the repetitions, (max - min) / median, no
    wider than the widest of its peers' (starsessions, the ceiling)."""
    def width(peer: str) -> float | None:
        xs = list(res.rps(peer, server, 1, "/inc").values())
        return (max(xs) - min(xs)) / med(xs) if len(xs) > 1 else None

    ours, peers = width("sw-redis"), [width(p) for p in ("starsessions", "plain")]
    known = [p for p in peers if p is not None]
    text = f"/inc RedisStore's spread over repetitions ≤ its peers' (uvicorn {stack}, 1 worker)"
    if ours is None or not known:
        return [text, "not run", "-"]
    return [text, f"{100 * ours:.0f}% vs {', '.join(f'{100 * p:.0f}%' for p in known)}",
            "**yes**" if ours <= max(known) else "**NO**"]


def write(data: dict[str, Any]) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(data))
    print(f"report: {DOC}")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks/results/latest.json"
    write(json.loads(path.read_text()))
