"""The sessionware demo, in Flask: 50 parallel requests add to one cart, none is lost.

Run it (from the repository root, with ``pip install -e .[flask]``)::

    python examples/flask_demo.py       # then open http://127.0.0.1:8001

It serves with Werkzeug's threaded server on 127.0.0.1:8001 and keeps sessions
in ``demo-sessions.db`` (SQLiteStore: no server needed). The button fires 50
fetches at once; each view reads the cart from ``flask.session``, waits a little
(as real views do) and writes it back. With Flask's cookie session, or any
last-writer-wins session store, most of the 50 items are lost; here all 50
arrive, because each request holds its session's lock from load to commit.
"""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue

from sessionware import Rule
from sessionware.flask import Sessionware
from sessionware.stores import SQLiteStore

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>sessionware + Flask</title>
<body style="font:16px system-ui;max-width:40em;margin:3em auto">
<h1>50 parallel requests, one Flask session</h1>
<button id="add">Add 50 items at once</button>
<button id="empty">Empty the cart</button>
<p>Cart: <b id="size">…</b> items <span id="note"></span></p>
<script>
const size = async () => (await (await fetch("/cart")).json()).items.length;
const show = async (note) => {
  document.getElementById("size").textContent = await size();
  document.getElementById("note").textContent = note || "";
};
document.getElementById("add").onclick = async () => {
  const before = await size();
  const posts = Array.from({length: 50}, (_, i) => fetch(`/cart/add?item=${i}`, {method: "POST"}));
  await Promise.all(posts);
  const after = await size();
  show(`(this click added ${after - before} of 50)`);
};
document.getElementById("empty").onclick = async () => {
  await fetch("/cart/clear", {method: "POST"});
  show();
};
show();
</script>
"""

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("DEMO_SECRET", "demo-only-change-me-0123456789abcdef")
Sessionware(app, store=SQLiteStore(os.environ.get("DEMO_DB", "demo-sessions.db")),
            lock_mode=[Rule("read", paths=["/cart"], methods=["GET"])])


@app.get("/")
def home() -> ResponseReturnValue:
    # Start the session with the page: 50 fetches sent before any cookie exists
    # would otherwise each start a session of their own.
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
