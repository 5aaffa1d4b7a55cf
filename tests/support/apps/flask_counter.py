"""The Flask app the Flask tests drive, in process or under a WSGI server
(gunicorn, waitress, ``flask run``).

Under a server, :func:`app_from_env` builds it over the store named by
``SESSIONWARE_TEST_STORE`` (see tests/support/apps/stores.py). ``/debug/threads``
tells which process answered and the threads it has, for tests that check
that a server's processes keep no thread per request.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, Response, abort, request, session, stream_with_context

from sessionware import SessionClosed, SessionNotLoaded
from sessionware.flask import Sessionware, commit_session
from sessionware.stores import Store

SECRET = "test-secret-0123456789abcdef0123456789"


def build_app(store: Store, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    app.config.update(options.pop("config", {}))
    Sessionware(app, store=store, **options)

    @app.after_request
    def worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())  # which process served it
        return response

    @app.get("/inc")
    def inc() -> str:
        n = session.get("n", 0)
        time.sleep(float(request.args.get("delay", "0.005")))
        session["n"] = n + 1
        return str(n + 1)

    @app.get("/n")
    def read_n() -> str:
        return str(session.get("n", 0))

    @app.get("/boom")
    def boom() -> str:
        session["n"] = 999
        raise RuntimeError("view failed after changing the session")

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        session["n"] = session.get("n", 0) + 1
        return "down for maintenance", 503

    @app.get("/forbidden")
    def forbidden() -> str:
        session["n"] = session.get("n", 0) + 1
        abort(403)

    @app.get("/login")
    def login() -> str:
        session.regenerate()  # type: ignore[attr-defined]
        session["user"] = "alice"
        return "ok"

    @app.get("/logout")
    def logout() -> str:
        session.invalidate()  # type: ignore[attr-defined]
        return "ok"

    @app.get("/early")
    def early() -> Response:
        session["n"] = session.get("n", 0) + 1
        commit_session(request)
        try:
            session["n"] = -1
        except SessionClosed:
            pass
        else:  # pragma: no cover - the failure this view exists to show
            return Response("changed after commit", 500)

        def body() -> Any:
            yield "committed;"
            yield str(session["n"])

        return Response(stream_with_context(body()))

    @app.get("/debug/threads")
    def debug_threads() -> dict[str, Any]:
        """The threads of this process but the one answering. Touches no
        session: a request without a cookie costs no store call."""
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        return {"pid": os.getpid(), "threads": others}

    @app.get("/static/x")
    def static_x() -> str:
        try:
            session["n"] = 1
        except SessionNotLoaded as exc:
            return f"refused: {exc}"
        return "changed"  # pragma: no cover

    return app


def app_from_env() -> Flask:
    """For gunicorn (``tests.support.apps.flask_counter:app_from_env()``).

    With ``--preload`` this runs in gunicorn's master before it forks: the
    store is set up here on purpose (connections opened, threads started), so
    the workers must open their own.
    """
    from tests.support.apps.stores import store_from_spec

    app = build_app(store_from_spec(os.environ["SESSIONWARE_TEST_STORE"]))
    app.extensions["sessionware"].core.ensure_ready()
    return app
