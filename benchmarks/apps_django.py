"""The benchmark app for the Django peers, for gunicorn:
``gunicorn 'benchmarks.apps_django:make_app()'``.

Same endpoints as :mod:`benchmarks.apps_wsgi` (``/inc``, ``/n``, ``/hello``,
``/__stats``), as Django views behind only the session middleware.
``BENCH_PEER``:

* ``django-cache``: Django's ``cache`` engine on Django's ``RedisCache`` at
  ``$BENCH_REDIS_URL`` (the fast engine Django's docs recommend);
* ``django-db``: Django's default ``db`` engine, its SQLite database at
  ``$BENCH_SQLITE`` (WAL and a busy timeout, as SQLiteStore runs);
* ``sw-django-redis``, ``sw-django-sqlite``: ``sessionware.django`` on
  RedisStore and SQLiteStore.

Each process reads ``/__stats`` counts: sessionware's store operations, or
the SQL statements of ``django-db``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path

from benchmarks.counting import COUNTS, sessionware_store

SECRET = "benchmark-secret-0123456789abcdef"
DEFAULT_DELAY = float(os.environ.get("BENCH_DELAY", "0"))
PEERS = ("django-cache", "django-db", "sw-django-redis", "sw-django-sqlite")


def inc(request: HttpRequest) -> HttpResponse:
    delay = float(request.GET.get("delay", DEFAULT_DELAY))
    n = request.session.get("n", 0)
    if delay:
        time.sleep(delay)
    request.session["n"] = n + 1
    return HttpResponse(str(n + 1))


def read_n(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n", 0)))


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello")


def stats(request: HttpRequest) -> HttpResponse:
    import sessionware

    return HttpResponse(json.dumps({**COUNTS, "_sessionware": sessionware.__file__}))


def _settings(peer: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "SECRET_KEY": SECRET, "DEBUG": False, "ALLOWED_HOSTS": ["127.0.0.1"],
        "ROOT_URLCONF": __name__, "USE_TZ": True, "INSTALLED_APPS": [],
        "DATABASES": {},
    }
    if peer == "django-cache":
        return {**common,
                "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware"],
                "SESSION_ENGINE": "django.contrib.sessions.backends.cache",
                "CACHES": {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": os.environ["BENCH_REDIS_URL"]}}}
    if peer == "django-db":
        return {**common, "INSTALLED_APPS": ["django.contrib.sessions"],
                "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware"],
                "SESSION_ENGINE": "django.contrib.sessions.backends.db",
                "DATABASES": {"default": {
                    "ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["BENCH_SQLITE"],
                    "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                                "init_command": "PRAGMA journal_mode = WAL; "
                                                "PRAGMA synchronous = NORMAL"}}}}
    if peer in ("sw-django-redis", "sw-django-sqlite"):
        from sessionware import Rule

        return {**common,
                "MIDDLEWARE": ["sessionware.django.SessionMiddleware"],
                "SESSION_ENGINE": "sessionware.django.engine",
                "SESSIONWARE": {"STORE": _counted_store(peer.removeprefix("sw-django-")),
                                "LOCK_MODE": [Rule("read", paths=["/n"]),
                                              Rule("none", paths=["/__stats"])]}}
    raise ValueError(f"unknown Django peer {peer!r}; one of {PEERS}")


def _counted_store(kind: str) -> Any:
    """The store for ``SESSIONWARE["STORE"]`` (an async-face store, as the
    setting takes), whose sync face, the one Django's WSGI handler uses,
    counts its operations."""
    from sessionware import stores

    cls = {"redis": stores.RedisStore, "sqlite": stores.SQLiteStore}[kind]

    class Counted(cls):  # type: ignore[misc, valid-type]
        def _make_twin(self) -> Any:
            return sessionware_store(kind, sync=True)

    where = os.environ["BENCH_REDIS_URL" if kind == "redis" else "BENCH_SQLITE"]
    return Counted(where)


def _count_queries() -> None:
    """Count ``django-db``'s SQL statements, its round trips, in COUNTS."""
    from django.db.backends.signals import connection_created

    def counting(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        COUNTS["sql"] += 1
        return execute(sql, params, many, context)

    def wrap(sender: Any, connection: Any, **kwargs: Any) -> None:
        if counting not in connection.execute_wrappers:  # a thread's wrapper reconnects
            connection.execute_wrappers.append(counting)

    connection_created.connect(wrap, weak=False)


def _migrate() -> None:
    """The sessions table, made by one worker while the others wait."""
    from django.core.management import call_command

    with open(os.environ["BENCH_SQLITE"] + ".migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", verbosity=0)


def make_app(peer: str | None = None) -> Any:
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    peer = peer or os.environ["BENCH_PEER"]
    settings.configure(**_settings(peer))
    django.setup()
    if peer == "django-db":
        _migrate()
        _count_queries()
    return get_wsgi_application()


urlpatterns = [path("inc", inc), path("n", read_n), path("hello", hello),
               path("__stats", stats)]
