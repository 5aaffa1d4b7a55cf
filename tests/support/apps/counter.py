"""The Starlette app the middleware tests drive, in-process or under uvicorn."""

from __future__ import annotations

import asyncio
import os
import select
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import Rule, SessionClosed, SessionMiddleware
from sessionware.stores import Store

if os.environ.get("SESSIONWARE_TEST_RELATIVE_SLEEP"):
    # Under libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC, the absolute
    # monotonic deadline that Python 3.11's time.sleep hands clock_nanosleep
    # is shifted by the fake offset, and a clock set back makes it invalid:
    # time.sleep raises EINVAL (wolfcw/libfaketime#426). A relative wait has
    # no deadline to shift; a real clock step never breaks time.sleep.
    def _relative_sleep(seconds: float) -> None:
        select.select([], [], [], seconds)

    time.sleep = _relative_sleep  # type: ignore[assignment]

SECRET = "test-secret-0123456789abcdef0123456789"


async def inc(request: Request) -> Response:
    n = request.session.get("n", 0)
    await asyncio.sleep(float(request.query_params.get("delay", "0.005")))
    request.session["n"] = n + 1
    return PlainTextResponse(str(n + 1))


async def read_n(request: Request) -> Response:
    return PlainTextResponse(str(request.session.get("n", 0)))


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def put(request: Request) -> Response:
    request.session[request.query_params["key"]] = request.query_params["value"]
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    request.session["n"] = 999
    raise RuntimeError("handler failed after changing the session")


async def big(request: Request) -> Response:
    request.session["blob"] = "x" * int(request.query_params["size"])
    return PlainTextResponse("ok")


async def unserializable(request: Request) -> Response:
    request.session["n"] = 5
    request.session["bad"] = {1, 2}
    return PlainTextResponse("ok")


async def login(request: Request) -> Response:
    request.session.regenerate()
    request.session["user"] = "alice"
    return PlainTextResponse("ok")


async def logout(request: Request) -> Response:
    request.session.invalidate()
    return PlainTextResponse("ok")


async def hold(request: Request) -> Response:
    """Change the session, announce that the lock is held, then never finish
    (until the test sets the app's release event or kills the process)."""
    request.session["n"] = request.session.get("n", 0) + 1000
    marker = request.query_params.get("marker")
    if marker:
        Path(marker).write_text("holding")
    release: asyncio.Event = request.app.state.release
    request.app.state.holding.set()
    await release.wait()
    return PlainTextResponse("released")


async def early(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    await request.session.commit()
    try:
        request.session["n"] = -1
    except SessionClosed:
        pass
    else:  # pragma: no cover - the failure this endpoint exists to show
        return PlainTextResponse("changed after commit", status_code=500)

    async def body() -> Any:
        yield b"committed;"
        release: asyncio.Event = request.app.state.release
        request.app.state.holding.set()
        await release.wait()
        yield b"done"

    return StreamingResponse(body())


async def mutate_snapshot(request: Request) -> Response:
    try:
        request.session["n"] = 1
    except SessionClosed as exc:
        return PlainTextResponse(f"refused: {exc}")
    return PlainTextResponse("changed", status_code=500)  # pragma: no cover


async def status(request: Request) -> Response:
    """Change the session, then answer with the status the query names."""
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse("status", status_code=int(request.query_params["code"]))


async def handled_failure(request: Request) -> Response:
    """Change the session, then raise: the app's exception handler answers 500."""
    request.session["n"] = 999
    raise ValueError("caught by the app's own exception handler")


async def add(request: Request) -> Response:
    """Append this request's id to the session's list: each answered request
    can be checked against the stored list afterwards."""
    ids = request.session.setdefault("ids", [])
    marker = request.query_params.get("marker")
    if marker:  # tell a test in another process that the lock is held
        Path(marker).write_text("holding")
    await asyncio.sleep(float(request.query_params.get("delay", "0")))
    ids.append(request.query_params["id"])
    return PlainTextResponse("added")


async def hold_add(request: Request) -> Response:
    """``add``, but hold the lock until the test sets ``app.state.release``."""
    request.session.setdefault("ids", []).append(request.query_params["id"])
    request.app.state.holding.set()
    await request.app.state.release.wait()
    return PlainTextResponse("added")


async def invalidate_then_set(request: Request) -> Response:
    request.session.invalidate()
    try:
        request.session["flash"] = "bye"
    except SessionClosed as exc:
        return PlainTextResponse(f"refused: {exc}")
    return PlainTextResponse("changed", status_code=500)  # pragma: no cover


async def early_nested(request: Request) -> Response:
    """Commit early, then change a nested value: the change cannot be saved."""
    request.session["cart"] = ["a"]
    await request.session.commit()
    request.session["cart"].append("lost")
    return PlainTextResponse("mutated")


async def stream_nested(request: Request) -> Response:
    """Change a nested value while the body streams, after the commit."""
    request.session["cart"] = ["a"]

    async def body() -> Any:
        yield b"streaming;"
        request.session["cart"].append("lost")
        yield b"done"

    return StreamingResponse(body())


async def cart(request: Request) -> Response:
    request.session["cart"] = [request.query_params["item"]]
    return PlainTextResponse("ok")


async def early_stream_nested(request: Request) -> Response:
    """Commit early, then change a nested value while the body streams."""
    request.session["cart"] = ["a"]
    await request.session.commit()

    async def body() -> Any:
        yield b"streaming;"
        request.session["cart"].append("lost")
        yield b"done"

    return StreamingResponse(body())


async def snapshot_cart(request: Request) -> Response:
    return PlainTextResponse(",".join(request.session.get("cart", [])))


async def snapshot_ids(request: Request) -> Response:
    return PlainTextResponse(" ".join(request.session.get("ids", [])))


async def snapshot_nested(request: Request) -> Response:
    request.session["cart"].append("lost")
    return PlainTextResponse("mutated")


async def login_hold(request: Request) -> Response:
    """A login that holds the lock until the test sets ``app.state.release``."""
    request.session.regenerate()
    request.session["user"] = "alice"
    request.app.state.holding.set()
    await request.app.state.release.wait()
    return PlainTextResponse("logged in")


async def bind(request: Request) -> Response:
    """A login: a new id, bound to the user ``?user=`` (``&regenerate=0``: the same id)."""
    if request.query_params.get("regenerate", "1") == "1":
        request.session.regenerate()
    request.session.bind_user(request.query_params.get("user") or None)
    return PlainTextResponse("bound")


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(str(websocket.session.get("n", 0)))
    await websocket.close()


routes = [
    Route("/inc", inc), Route("/n", read_n), Route("/hello", hello), Route("/put", put),
    Route("/boom", boom), Route("/big", big), Route("/unserializable", unserializable),
    Route("/login", login), Route("/logout", logout), Route("/hold", hold),
    Route("/early", early), Route("/snapshot/mutate", mutate_snapshot),
    Route("/status", status), Route("/handled-failure", handled_failure),
    Route("/add", add), Route("/hold-add", hold_add),
    Route("/invalidate-then-set", invalidate_then_set), Route("/early-nested", early_nested),
    Route("/stream-nested", stream_nested), Route("/snapshot/nested", snapshot_nested),
    Route("/cart", cart), Route("/snapshot/cart", snapshot_cart),
    Route("/snapshot/ids", snapshot_ids), Route("/early-stream-nested", early_stream_nested),
    Route("/login-hold", login_hold), Route("/bind", bind),
    WebSocketRoute("/ws", socket),
]

MODES = [Rule("read", paths=["/n", "/snapshot"]), Rule("none", paths=["/static"])]


async def answer_500(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("handled", status_code=500)


def build_app(store: Store, **options: Any) -> Starlette:
    options.setdefault("secret_key", SECRET)
    options.setdefault("lock_mode", MODES)
    app = Starlette(routes=routes, exception_handlers={ValueError: answer_500},
                    middleware=[Middleware(SessionMiddleware, store=store, **options)])
    app.state.release = asyncio.Event()
    app.state.holding = asyncio.Event()
    return app


def app_from_env() -> Starlette:
    """For uvicorn: the store named by SESSIONWARE_TEST_STORE (see tests/support/apps/stores.py)."""
    from tests.support.apps.stores import store_from_spec

    lease_ttl = float(os.environ.get("SESSIONWARE_TEST_LEASE", "5"))
    return build_app(store_from_spec(os.environ["SESSIONWARE_TEST_STORE"]), lease_ttl=lease_ttl)
