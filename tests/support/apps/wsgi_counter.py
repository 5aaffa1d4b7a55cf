"""The plain WSGI twin of tests/support/apps/counter.py: the same paths, answering the
same way, for the suites' sync face (in process) and for WSGI servers started
in other processes (:func:`app_from_env`, for gunicorn).

No framework: each path is a method over ``environ["sessionware.session"]``,
so what the suites see is the WSGI middleware's own doing. A framework's error
page (``/handled-failure``) is a ``start_response`` with ``exc_info``, as
WSGI frameworks answer an exception they caught.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from sessionware import Rule, SessionClosed
from sessionware.stores import Store, SyncStore
from sessionware.wsgi import SESSION_KEY, WSGISessionMiddleware, abandon_session, commit_session

SECRET = "test-secret-0123456789abcdef0123456789"
MODES = [Rule("read", paths=["/n", "/snapshot"]), Rule("none", paths=["/static"])]
HOLD_LIMIT = 30.0  # no handler waits for release longer: no thread outlives its test long

Query = dict[str, str]


def status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


class CounterApp:
    """One method per path (``/snapshot/cart`` is ``snapshot_cart``); the
    events let a test know a handler holds its session's lock, and let it go."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.closed: list[str] = []  # paths whose generator body was closed

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        name = environ["PATH_INFO"].strip("/").replace("/", "_").replace("-", "_")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        handler: Callable[..., Iterable[bytes]] | None = getattr(self, f"route_{name}", None)
        if handler is None:
            return text(start_response, "not found", 404)
        return handler(environ.get(SESSION_KEY), query, start_response, environ)

    def _hold(self) -> None:
        self.holding.set()
        self.release.wait(HOLD_LIMIT)

    # -- the paths of tests/support/apps/counter.py ----------------------------------------

    def route_inc(self, session: Any, query: Query, start: StartResponse, _: Any
                  ) -> list[bytes]:
        n = session.get("n", 0)
        time.sleep(float(query.get("delay", "0.005")))
        session["n"] = n + 1
        return text(start, str(n + 1))

    def route_n(self, session: Any, _: Query, start: StartResponse, __: Any) -> list[bytes]:
        return text(start, str(session.get("n", 0)))

    def route_hello(self, session: Any, _: Query, start: StartResponse, __: Any) -> list[bytes]:
        return text(start, "hello")

    def route_put(self, session: Any, query: Query, start: StartResponse, _: Any
                  ) -> list[bytes]:
        session[query["key"]] = query["value"]
        return text(start, "ok")

    def route_boom(self, session: Any, _: Query, start: StartResponse, __: Any) -> list[bytes]:
        session["n"] = 999
        raise RuntimeError("handler failed after changing the session")

    def route_big(self, session: Any, query: Query, start: StartResponse, _: Any
                  ) -> list[bytes]:
        session["blob"] = "x" * int(query["size"])
        return text(start, "ok")

    def route_unserializable(self, session: Any, _: Query, start: StartResponse, __: Any
                             ) -> list[bytes]:
        session["n"] = 5
        session["bad"] = {1, 2}
        return text(start, "ok")

    def route_login(self, session: Any, _: Query, start: StartResponse, __: Any
                    ) -> list[bytes]:
        session.regenerate()
        session["user"] = "alice"
        return text(start, "ok")

    def route_logout(self, session: Any, _: Query, start: StartResponse, __: Any
                     ) -> list[bytes]:
        session.invalidate()
        return text(start, "ok")

    def route_hold(self, session: Any, query: Query, start: StartResponse, _: Any
                   ) -> list[bytes]:
        """Change the session, announce that the lock is held (an event, and a
        marker file for a test in another process), then wait for release."""
        session["n"] = session.get("n", 0) + 1000
        if query.get("marker"):
            Path(query["marker"]).write_text("holding")
        self._hold()
        return text(start, "released")

    def route_early(self, session: Any, _: Query, start: StartResponse,
                    environ: WSGIEnvironment) -> Iterator[bytes]:
        session["n"] = session.get("n", 0) + 1
        commit_session(environ)
        try:
            session["n"] = -1
        except SessionClosed:
            pass
        else:  # pragma: no cover - the failure this path exists to show
            yield from text(start, "changed after commit", 500)
            return
        start(status_line(200), [("Content-Type", "text/plain")])
        yield b"committed;"
        self._hold()
        yield b"done"

    def route_snapshot_mutate(self, session: Any, _: Query, start: StartResponse, __: Any
                              ) -> list[bytes]:
        try:
            session["n"] = 1
        except SessionClosed as exc:
            return text(start, f"refused: {exc}")
        return text(start, "changed", 500)  # pragma: no cover

    def route_status(self, session: Any, query: Query, start: StartResponse, _: Any
                     ) -> list[bytes]:
        """Change the session, then answer with the status the query names
        (no exception, no exc_info)."""
        session["n"] = session.get("n", 0) + 1
        return text(start, "status", int(query["code"]))

    def route_handled_failure(self, session: Any, _: Query, start: StartResponse, __: Any
                              ) -> list[bytes]:
        """Change the session, then raise; the 'framework' catches it and
        answers with its error page: start_response with exc_info."""
        session["n"] = 999
        try:
            raise ValueError("caught by the app's own exception handler")
        except ValueError:
            start(status_line(500), [("Content-Type", "text/plain")], sys.exc_info())
        return [b"handled"]

    def route_add(self, session: Any, query: Query, start: StartResponse, _: Any
                  ) -> list[bytes]:
        """Append this request's id to the session's list (see tests/faults)."""
        ids = session.setdefault("ids", [])
        if query.get("marker"):
            Path(query["marker"]).write_text("holding")
        time.sleep(float(query.get("delay", "0")))
        ids.append(query["id"])
        return text(start, "added")

    def route_hold_add(self, session: Any, query: Query, start: StartResponse, _: Any
                       ) -> list[bytes]:
        session.setdefault("ids", []).append(query["id"])
        self._hold()
        return text(start, "added")

    def route_invalidate_then_set(self, session: Any, _: Query, start: StartResponse, __: Any
                                  ) -> list[bytes]:
        session.invalidate()
        try:
            session["flash"] = "bye"
        except SessionClosed as exc:
            return text(start, f"refused: {exc}")
        return text(start, "changed", 500)  # pragma: no cover

    def route_early_nested(self, session: Any, _: Query, start: StartResponse,
                           environ: WSGIEnvironment) -> list[bytes]:
        """Commit early, then change a nested value: the change cannot be saved."""
        session["cart"] = ["a"]
        commit_session(environ)
        session["cart"].append("lost")
        return text(start, "mutated")

    def route_stream_nested(self, session: Any, _: Query, start: StartResponse, __: Any
                            ) -> Iterator[bytes]:
        """Change a nested value while the body streams, after the commit."""
        session["cart"] = ["a"]
        start(status_line(200), [("Content-Type", "text/plain")])
        yield b"streaming;"
        session["cart"].append("lost")
        yield b"done"

    def route_early_stream_nested(self, session: Any, _: Query, start: StartResponse,
                                  environ: WSGIEnvironment) -> Iterator[bytes]:
        """Commit early, then change a nested value while the body streams."""
        session["cart"] = ["a"]
        commit_session(environ)
        start(status_line(200), [("Content-Type", "text/plain")])
        yield b"streaming;"
        session["cart"].append("lost")
        yield b"done"

    def route_cart(self, session: Any, query: Query, start: StartResponse, _: Any
                   ) -> list[bytes]:
        session["cart"] = [query["item"]]
        return text(start, "ok")

    def route_snapshot_cart(self, session: Any, _: Query, start: StartResponse, __: Any
                            ) -> list[bytes]:
        return text(start, ",".join(session.get("cart", [])))

    def route_snapshot_ids(self, session: Any, _: Query, start: StartResponse, __: Any
                           ) -> list[bytes]:
        return text(start, " ".join(session.get("ids", [])))

    def route_snapshot_nested(self, session: Any, _: Query, start: StartResponse, __: Any
                              ) -> list[bytes]:
        session["cart"].append("lost")
        return text(start, "mutated")

    def route_login_hold(self, session: Any, _: Query, start: StartResponse, __: Any
                         ) -> list[bytes]:
        session.regenerate()
        session["user"] = "alice"
        self._hold()
        return text(start, "logged in")

    def route_bind(self, session: Any, query: Query, start: StartResponse, __: Any
                   ) -> list[bytes]:
        if query.get("regenerate", "1") == "1":
            session.regenerate()
        session.bind_user(query.get("user") or None)
        return text(start, "bound")

    def route_static_x(self, session: Any, _: Query, start: StartResponse, __: Any
                       ) -> list[bytes]:
        return text(start, "no session" if session is None else "session")

    # -- WSGI's own ways ---------------------------------------------------------

    def route_abandoned(self, session: Any, _: Query, start: StartResponse,
                        environ: WSGIEnvironment) -> list[bytes]:
        """A framework that catches the exception itself and says so."""
        session["n"] = 999
        abandon_session(environ)
        return text(start, "oops", 500)

    def route_lazy(self, session: Any, query: Query, start: StartResponse, _: Any
                   ) -> Iterator[bytes]:
        """A generator app: start_response only runs at the first step."""
        try:
            session["n"] = session.get("n", 0) + 1
            session["blob"] = "x" * int(query.get("size", "0"))
            start(status_line(200), [("Content-Type", "text/plain")])
            yield b"first;"
            yield b"second"
        finally:
            self.closed.append("lazy")


def text(start_response: StartResponse, body: str, status: int = 200) -> list[bytes]:
    start_response(status_line(status), [("Content-Type", "text/plain")])
    return [body.encode()]


def build_app(store: Store | SyncStore, **options: Any) -> WSGISessionMiddleware:
    """The app behind the WSGI middleware; the app is ``middleware.app``."""
    options.setdefault("secret_key", SECRET)
    options.setdefault("lock_mode", MODES)
    # counts start at the first request (the startup check: test_startup_check.py)
    options.setdefault("check_store", False)
    return WSGISessionMiddleware(CounterApp(), store=store, **options)


def app_from_env() -> WSGISessionMiddleware:
    """For WSGI servers (``tests.support.apps.wsgi_counter:app_from_env()``): the store
    named by SESSIONWARE_TEST_STORE (see tests/support/apps/stores.py)."""
    from tests.support.apps.stores import store_from_spec

    lease_ttl = float(os.environ.get("SESSIONWARE_TEST_LEASE", "5"))
    return build_app(store_from_spec(os.environ["SESSIONWARE_TEST_STORE"]), lease_ttl=lease_ttl)
