"""The sessionware demo, in Flask: 50 parallel requests add to one cart, none is lost.

Run it (from the repository root)::

    bash scripts/demo.sh flask          # then open http://127.0.0.1:8001

or ``python examples/flask_demo.py`` in the venv that ``scripts/demo.sh`` made.
It serves with Werkzeug's threaded server on 127.0.0.1:8001 and keeps sessions
in ``demo-sessions.db`` (SQLiteStore: no server needed). Environment variables:
``PORT`` (default 8001), ``DEMO_DB`` and ``DEMO_SECRET``, as for demo.py. The button fires 50
fetches at once; each view reads the cart from ``flask.session``, waits a little
(as real views do) and writes it back. With Flask's cookie session, or any
last-writer-wins session store, most of the 50 items are lost; here all 50
arrive, because each request holds its session's lock from load to commit.
"""

from __future__ import annotations

import os
import time

from _page import page  # examples/_page.py: the page every demo serves
from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue

from sessionware import Rule
from sessionware.flask import Sessionware
from sessionware.stores import SQLiteStore

PAGE = page("Flask", "is a Flask view on one of Werkzeug's threads")

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("DEMO_SECRET", "demo-only-change-me-0123456789abcdef")
Sessionware(app, store=SQLiteStore(os.environ.get("DEMO_DB", "demo-sessions.db")),
            lock_mode=[Rule("read", paths=["/cart"], methods=["GET"])])


@app.get("/")
def home() -> ResponseReturnValue:
    # The page that starts the work starts the session: writing to it here sends
    # the cookie with the page, so the 50 fetches its script sends at once carry
    # it and take turns on one session. Sent before any cookie exists, each would
    # start a session of its own, and the cart would keep one item.
    session.setdefault("cart", [])
    return PAGE


@app.get("/cart")
def cart() -> ResponseReturnValue:
    return jsonify(items=session.get("cart", []))


@app.post("/cart/add")
def add() -> ResponseReturnValue:
    items = session.get("cart", [])
    time.sleep(0.01)  # a view that does some work between its read and its write
    session["cart"] = [*items, request.args.get("item", "?")]
    return jsonify(count=len(session["cart"]))


@app.post("/cart/clear")
def clear() -> ResponseReturnValue:
    session["cart"] = []
    return jsonify(count=0)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8001")), threaded=True)
