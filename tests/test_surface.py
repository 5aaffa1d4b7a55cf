"""One driver surface: ASGI (Starlette), FastAPI, WSGI and Flask load,
commit and declare the session with the same names and signature shapes, say
"no session in this request" with one error, and word it with their own names.

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
from flask import Flask, request, session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import sessionware
import sessionware.fastapi
from sessionware import (
    ConfigurationError,
    LockMode,
    SessionClosed,
    SessionMiddleware,
    SessionNotLoaded,
    WSGISessionMiddleware,
    commit_session,
    load_session,
    uses_session,
)
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
            elif action == "commit":
                await commit_session(request)
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

    @app.get("/commit")
    async def commit(request: Request) -> str:
        await sessionware.fastapi.commit_session(request)
        return "committed"  # pragma: no cover

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
                flask_driver.load_session(request)
            elif action == "commit":
                flask_driver.commit_session(request)
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
    ("asgi", "load", "none"), ("asgi", "load", NO_MIDDLEWARE), ("asgi", "commit", "none"),
    ("asgi", "commit", NO_MIDDLEWARE), ("asgi", "commit", "lazy"), ("asgi", "touch", "lazy"),
    ("fastapi", "load", "none"), ("fastapi", "commit", "none"), ("fastapi", "commit", "lazy"),
    ("fastapi", "touch", "lazy"),
    ("wsgi", "load", "none"), ("wsgi", "load", NO_MIDDLEWARE), ("wsgi", "commit", "none"),
    ("wsgi", "commit", NO_MIDDLEWARE), ("wsgi", "commit", "lazy"), ("wsgi", "touch", "lazy"),
    ("flask", "load", "none"), ("flask", "load", NO_MIDDLEWARE), ("flask", "commit", "none"),
    ("flask", "commit", "lazy"), ("flask", "touch", "none"), ("flask", "touch", "lazy"),
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


# -- load, commit, declare: the same names and shapes ---------------------------------

DRIVERS = {"asgi": sessionware, "fastapi": sessionware.fastapi, "wsgi": wsgi_driver,
         "flask": flask_driver}


@pytest.mark.parametrize("driver", list(DRIVERS.values()), ids=list(DRIVERS))
def test_every_driver_loads_commits_and_declares_with_the_same_names_and_shapes(
        driver: Any) -> None:
    load = inspect.signature(driver.load_session).parameters
    assert list(load) == ["request", "mode"]
    assert load["mode"].default is LockMode.EXCLUSIVE
    assert list(inspect.signature(driver.commit_session).parameters) == ["request"]
    declare = inspect.signature(driver.uses_session).parameters
    assert list(declare) == ["mode"] and declare["mode"].default is LockMode.EXCLUSIVE


@pytest.mark.parametrize("driver", list(DRIVERS.values()), ids=list(DRIVERS))
@pytest.mark.parametrize("mode", ["lazy", "none", "exclusiv"])
def test_a_session_is_declared_exclusive_or_read_when_the_route_is_made(
        driver: Any, mode: str) -> None:
    with pytest.raises(ConfigurationError, match="'exclusive' or 'read'"):
        driver.uses_session(mode)


async def test_asgi_declares_loads_and_commits() -> None:
    seen: list[str] = []

    @uses_session()
    async def declared(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse(str(request.session["n"]))

    async def early(request: Request) -> PlainTextResponse:
        session = await load_session(request)
        session["n"] = session.get("n", 0) + 10
        await commit_session(request)
        try:
            session["n"] = -1
        except SessionClosed:
            seen.append("closed")
        return PlainTextResponse(str(session["n"]))

    app = SessionMiddleware(Starlette(routes=[Route("/declared", declared),
                                              Route("/early", early)]),
                            store=MemoryStore(), secret_key=SECRET, lock_mode="lazy")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/declared")).text == "1"
        assert (await client.get("/early")).text == "11"
        assert (await client.get("/declared")).text == "12"
    assert seen == ["closed"]


async def test_fastapi_declares_on_the_route_loads_and_commits() -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=MemoryStore(), secret_key=SECRET,
                       lock_mode="lazy")

    @app.get("/declared", dependencies=[sessionware.fastapi.uses_session()])
    async def declared(request: Request) -> int:
        request.session["n"] = request.session.get("n", 0) + 1
        return int(request.session["n"])

    @app.get("/early")
    async def early(request: Request) -> int:
        session = await sessionware.fastapi.load_session(request)
        session["n"] = session.get("n", 0) + 10
        await sessionware.fastapi.commit_session(request)
        with pytest.raises(SessionClosed):
            session["n"] = -1
        return int(session["n"])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/declared")).json() == 1
        assert (await client.get("/early")).json() == 11
        assert (await client.get("/declared")).json() == 12


def test_wsgi_declares_loads_and_commits() -> None:
    @wsgi_driver.uses_session()
    def declared(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = environ[wsgi_driver.SESSION_KEY]
        session["n"] = session.get("n", 0) + 1
        start_response("200 OK", [])
        return [str(session["n"]).encode()]

    def early(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = wsgi_driver.load_session(environ)
        session["n"] = session.get("n", 0) + 10
        wsgi_driver.commit_session(environ)
        with pytest.raises(SessionClosed):
            session["n"] = -1
        start_response("200 OK", [])
        return [str(session["n"]).encode()]

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        handler = declared if environ["PATH_INFO"] == "/declared" else early
        return handler(environ, start_response)

    middleware = WSGISessionMiddleware(app, store=MemoryStore(), secret_key=SECRET,
                                       lock_mode="lazy")
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://t") as client:
        assert client.get("/declared").text == "1"
        assert client.get("/early").text == "11"
        assert client.get("/declared").text == "12"


def test_wsgi_takes_a_frameworks_request_object_as_well_as_the_environ() -> None:
    from werkzeug.wrappers import Request as WerkzeugRequest

    @wsgi_driver.uses_session("read")
    def view(request: WerkzeugRequest) -> bytes:
        return str(request.environ[wsgi_driver.SESSION_KEY].get("n", 0)).encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = WerkzeugRequest(environ)
        if environ["PATH_INFO"] == "/inc":
            session = wsgi_driver.load_session(request)
            session["n"] = session.get("n", 0) + 1
            body = b"ok"
        else:
            body = view(request)
        start_response("200 OK", [])
        return [body]

    middleware = WSGISessionMiddleware(app, store=MemoryStore(), secret_key=SECRET,
                                       lock_mode="lazy")
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://t") as client:
        client.get("/inc")
        client.get("/inc")
        assert client.get("/view").text == "2"


def test_flask_declares_loads_and_commits() -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET
    flask_driver.Sessionware(app, store=MemoryStore(), lock_mode="lazy")

    @app.get("/declared")
    @flask_driver.uses_session()
    def declared() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/early")
    def early() -> str:
        loaded = flask_driver.load_session(request)
        assert loaded is session._get_current_object()  # type: ignore[attr-defined]
        loaded["n"] = loaded.get("n", 0) + 10
        flask_driver.commit_session(request)
        with pytest.raises(SessionClosed):
            loaded["n"] = -1
        return str(loaded["n"])

    client = app.test_client()
    assert client.get("/declared").text == "1"
    assert client.get("/early").text == "11"
    assert client.get("/declared").text == "12"
