"""Profile one peer under load: ``python -m benchmarks.profile PEER [PATH] [--server S]
[--workers N] [--seconds S]``.

Starts the peer as the benchmark does (its own valkey-server, 1,000 sessions),
runs wrk against PATH, and samples the server worker with py-spy (all threads,
so the WSGI driver's loop thread shows). Prints the hottest frames, inclusive
and self, and leaves the raw collapsed stacks (for flame graphs) in /tmp.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import clients
from benchmarks.bench import PEERS
from benchmarks.servers import AppServer, Valkey


def summarize(path: str, top: int = 40) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0

    def clean(frame: str) -> str:
        frame = re.sub(r" \(/.*?site-packages/", " (", frame)
        return re.sub(r":\d+\)$", ")", frame)

    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [clean(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "-- inclusive"]
    lines += [f"{100 * v / total:5.1f}% {k[:140]}" for k, v in inclusive.most_common(top)]
    lines += ["-- self"]
    lines += [f"{100 * v / total:5.1f}% {k[:140]}" for k, v in own.most_common(top // 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer")
    parser.add_argument("path", nargs="?", default="/inc")
    parser.add_argument("--server", default=None, help="uvicorn | sync | gthread")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    peer = next(p for p in PEERS if p.name == args.peer)
    server = args.server or ("uvicorn" if peer.kind == "asgi" else "sync")
    workdir = tempfile.mkdtemp(prefix="sessionware-profile-")
    valkey = Valkey(workdir) if peer.store == "redis" else None
    env = {"BENCH_PEER": peer.name, "BENCH_SQLITE": f"{workdir}/s.db",
           **({"BENCH_REDIS_URL": valkey.url} if valkey else {})}
    app = AppServer(peer.kind, server, args.workers, env, workdir)
    try:
        cookies = clients.create_sessions(app.base, 1000)
        cookie_file = f"{workdir}/cookies"
        Path(cookie_file).write_text("\n".join(cookies) + "\n")
        clients.wrk(app.base, args.path, cookie_file, 1, 32)
        group = subprocess.run(["pgrep", "-g", str(app.process.proc.pid)],
                               capture_output=True, text=True).stdout.split()
        workers = [p for p in group if p != str(app.process.proc.pid)] or group
        out = f"/tmp/profile-{peer.name}-{server}{args.workers}{args.path.replace('/', '-')}.txt"
        spy = subprocess.Popen(["py-spy", "record", "-r", "500", "-d", str(args.seconds),
                                "-f", "raw", "-o", out, "--nonblocking", "--threads",
                                "-p", workers[0]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        result = clients.wrk(app.base, args.path, cookie_file, args.seconds, 32)
        spy.wait()
        print(f"{peer.name} {server} x{args.workers} {args.path}: {result['rps']:.0f} req/s "
              f"(while sampled); raw stacks: {out}")
        print(summarize(out))
    finally:
        app.stop()
        if valkey:
            valkey.stop()


if __name__ == "__main__":
    main()
