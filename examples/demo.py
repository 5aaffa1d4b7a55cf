"""The sessionware demo: 50 parallel requests add to one cart, and none is lost.

Run it (from the repository root)::

    bash scripts/demo.sh            # then open http://127.0.0.1:8000

It serves with uvicorn on 127.0.0.1:8000 and keeps sessions in
``demo-sessions.db`` (SQLiteStore, the embedded default: no server needed).
Environment variables: ``PORT`` (default 8000), ``DEMO_DB`` (the SQLite file,
default ``demo-sessions.db``), ``DEMO_SECRET`` (the cookie's signing key; the
default is public, so set your own anywhere but on your own machine).
The page's button fires 50 fetches at once; each handler reads the cart, waits
a little (as real handlers do) and writes it back. With a last-writer-wins
session library most of the 50 items are lost; here all 50 arrive, because each
request holds the session's lock from load to commit.
"""

from __future__ import annotations

import asyncio
import os

from _page import page  # examples/_page.py: the page every demo serves
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sessionware import Rule, SessionMiddleware
from sessionware.stores import SQLiteStore

PAGE = page("Starlette", "is an async handler")


async def home(request: Request) -> Response:
    # The page that starts the work starts the session: writing to it here sends
    # the cookie with the page, so the 50 fetches its script sends at once carry
    # it and take turns on one session. Sent before any cookie exists, each would
    # start a session of its own, and the cart would keep one item.
    request.session.setdefault("cart", [])
    return HTMLResponse(PAGE)


async def cart(request: Request) -> Response:
    return JSONResponse({"items": request.session.get("cart", [])})


async def add(request: Request) -> Response:
    items = request.session.get("cart", [])
    await asyncio.sleep(0.01)  # a handler that does some work between read and write
    request.session["cart"] = [*items, request.query_params.get("item", "?")]
    return JSONResponse({"count": len(request.session["cart"])})


async def clear(request: Request) -> Response:
    request.session["cart"] = []
    return JSONResponse({"count": 0})


app = Starlette(
    routes=[Route("/", home), Route("/cart", cart), Route("/cart/add", add, methods=["POST"]),
            Route("/cart/clear", clear, methods=["POST"])],
    middleware=[Middleware(
        SessionMiddleware,
        store=SQLiteStore(os.environ.get("DEMO_DB", "demo-sessions.db")),
        secret_key=os.environ.get("DEMO_SECRET", "demo-only-change-me-0123456789abcdef"),
        lock_mode=[Rule("read", paths=["/cart"], methods=["GET"])],
    )],
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
