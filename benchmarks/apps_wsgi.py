"""The benchmark app for the WSGI peers (Flask), for gunicorn:
``gunicorn 'benchmarks.apps_wsgi:make_app()'``.

Same endpoints as :mod:`benchmarks.apps_asgi` (``/inc``, ``/n``, ``/hello``,
``/__stats``). ``BENCH_PEER``: ``flask-plain`` (no session: the ceiling),
``flask-session`` (Flask-Session with Redis), ``sw-flask-sqlite``,
``sw-flask-redis`` (sessionware's Flask integration).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flask import Flask, request, session

from benchmarks.counting import COUNTS, sessionware_store


def _sessionware_path() -> str:
    import sessionware

    return str(sessionware.__file__)


SECRET = "benchmark-secret-0123456789abcdef"
DEFAULT_DELAY = float(os.environ.get("BENCH_DELAY", "0"))
PEERS = ("flask-plain", "flask-session", "sw-flask-sqlite", "sw-flask-redis")


def _routes(app: Flask, use_session: bool) -> None:
    @app.get("/inc")
    def inc() -> str:
        delay = float(request.args.get("delay", DEFAULT_DELAY))
        if not use_session:
            if delay:
                time.sleep(delay)
            return "1"
        n = session.get("n", 0)
        if delay:
            time.sleep(delay)
        session["n"] = n + 1
        return str(n + 1)

    @app.get("/n")
    def read_n() -> str:
        return str(session.get("n", 0)) if use_session else "0"

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/__stats")
    def stats() -> str:
        return json.dumps({**COUNTS, "_sessionware": _sessionware_path()})


def make_app(peer: str | None = None) -> Any:
    peer = peer or os.environ["BENCH_PEER"]
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    app = Flask("bench")
    app.secret_key = SECRET
    if peer == "flask-plain":
        _routes(app, use_session=False)
        return app
    _routes(app, use_session=True)
    if peer == "flask-session":
        from flask_session import Session
        from redis import Redis

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=Redis.from_url(redis_url),
                          SESSION_PERMANENT=False)
        Session(app)
        return app
    if peer in ("sw-flask-sqlite", "sw-flask-redis"):
        from sessionware import Rule
        from sessionware.flask import Sessionware

        store = sessionware_store(peer.removeprefix("sw-flask-"), sync=True)
        modes = [Rule("read", paths=["/n"]), Rule("none", paths=["/__stats"])]
        Sessionware(app, store=store, secret_key=SECRET, lock_mode=modes)
        return app
    raise ValueError(f"unknown WSGI peer {peer!r}; one of {PEERS}")
