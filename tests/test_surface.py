"""One driver surface: ASGI (Starlette), FastAPI, WSGI and Flask say "no
session in this request" with one error, and word it with their own names.

Each probe makes one request to a tiny app of its driver whose handler does
one thing to the session (``load`` it, ``commit`` it, ``touch``: change it)
and returns what that raised. The lock mode is ``none`` (the request has no
session), ``lazy`` (not loaded yet), or no middleware at all.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask, session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sessionware import SessionMiddleware, SessionNotLoaded, WSGISessionMiddleware, load_session
from sessionware import flask as flask_driver
from sessionware import wsgi as wsgi_driver
from sessionware.fastapi import LockedSession
from sessionware.stores import MemoryStore

SECRET = "k" * 32
NO_MIDDLEWARE = None

Caught = BaseException | None
Probe = Callable[[str, str | None], Caught | Awaitable[Caught]]


async def asgi(action: str, mode: str | None) -> BaseException | None:
    caught: list[BaseException] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        try:
            if action == "load":
                await load_session(request)
            elif action == "touch":
                request.session["n"] = 1
        except Exception as exc:
            caught.append(exc)
        return PlainTextResponse("ok")

    app: Any = Starlette(routes=[Route("/", endpoint)])
    if mode is not NO_MIDDLEWARE:
        app = SessionMiddleware(app, store=MemoryStore(), secret_key=SECRET, lock_mode=mode)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/")).text == "ok"
    return caught[0] if caught else None


async def fastapi(action: str, mode: str | None) -> BaseException | None:
    """The error leaves the app: FastAPI runs the dependency before the endpoint."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=MemoryStore(), secret_key=SECRET,
                       lock_mode=mode or "none")

    @app.get("/load")
    async def load(session: LockedSession) -> str:  # pragma: no cover - never runs
        return "loaded"

    @app.get("/touch")
    async def touch(request: Request) -> str:
        request.session["n"] = 1
        return "changed"  # pragma: no cover

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        try:
            await client.get(f"/{action}")
        except Exception as exc:
            return exc
    return None  # pragma: no cover - the failure the tests exist to show


def wsgi(action: str, mode: str | None) -> BaseException | None:
    caught: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            if action == "load":
                wsgi_driver.load_session(environ)
            elif action == "commit":
                wsgi_driver.commit_session(environ)
            elif action == "touch":
                environ[wsgi_driver.SESSION_KEY]["n"] = 1
        except Exception as exc:
            caught.append(exc)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    served: Any = app
    if mode is not NO_MIDDLEWARE:
        served = WSGISessionMiddleware(app, store=MemoryStore(), secret_key=SECRET,
                                       lock_mode=mode)
    with httpx.Client(transport=httpx.WSGITransport(app=served), base_url="http://t") as client:
        assert client.get("/").text == "ok"
    return caught[0] if caught else None


def flask(action: str, mode: str | None) -> BaseException | None:
    caught: list[BaseException] = []
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    if mode is not NO_MIDDLEWARE:
        flask_driver.Sessionware(app, store=MemoryStore(), lock_mode=mode)

    @app.get("/")
    def view() -> str:
        try:
            if action == "load":
                flask_driver.load_session()
            elif action == "commit":
                flask_driver.commit_session()
            elif action == "touch":
                session["n"] = 1
        except Exception as exc:
            caught.append(exc)
        return "ok"

    assert app.test_client().get("/").text == "ok"
    return caught[0] if caught else None


PROBES: dict[str, Probe] = {"asgi": asgi, "fastapi": fastapi, "wsgi": wsgi, "flask": flask}


async def probe(driver: str, action: str, mode: str | None) -> BaseException | None:
    caught = PROBES[driver](action, mode)
    return await caught if inspect.isawaitable(caught) else caught

NO_SESSION = [
    ("asgi", "load", "none"), ("asgi", "load", NO_MIDDLEWARE), ("asgi", "touch", "lazy"),
    ("fastapi", "load", "none"), ("fastapi", "touch", "lazy"),
    ("wsgi", "load", "none"), ("wsgi", "load", NO_MIDDLEWARE), ("wsgi", "commit", "none"),
    ("wsgi", "commit", NO_MIDDLEWARE), ("wsgi", "touch", "lazy"),
    ("flask", "load", "none"), ("flask", "load", NO_MIDDLEWARE), ("flask", "commit", "none"),
    ("flask", "touch", "none"), ("flask", "touch", "lazy"),
]


@pytest.mark.parametrize(("driver", "action", "mode"), NO_SESSION)
async def test_no_session_in_this_request_is_one_error_in_every_driver(
        driver: str, action: str, mode: str | None) -> None:
    caught = await probe(driver, action, mode)
    assert type(caught) is SessionNotLoaded, repr(caught)
    assert isinstance(caught, RuntimeError)  # what Flask's NullSession raised


@pytest.mark.parametrize(("driver", "says", "not_says"), [
    ("asgi", "await load_session(request)", "environ"),
    ("fastapi", "sessionware.fastapi dependency", "environ"),
    ("wsgi", "sessionware.wsgi.load_session(environ)", "await"),
    ("flask", "sessionware.flask.load_session(", "await"),
])
async def test_a_session_not_loaded_says_how_to_load_it_in_the_drivers_own_terms(
        driver: str, says: str, not_says: str) -> None:
    message = str(await probe(driver, "touch", "lazy"))
    assert says in message and not_says not in message, message
