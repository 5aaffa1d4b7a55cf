"""The Litestar app the Litestar tests drive, in-process or under uvicorn.

The plain ASGI ``SessionMiddleware``, added as Litestar adds middleware
(``DefineMiddleware``); the handlers use the session as Litestar apps do:
``request.session``, ``request.set_session()``, ``request.clear_session()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import msgspec
import pydantic
from litestar import Litestar, Request, get
from litestar.middleware import DefineMiddleware

from sessionware import Rule, SessionMiddleware, load_session
from sessionware.stores import Store

SECRET = "test-secret-0123456789abcdef0123456789"

AnyRequest = Request[Any, Any, Any]


@dataclasses.dataclass
class CartData:
    user: str
    items: list[str]


class CartModel(pydantic.BaseModel):
    user: str
    items: list[str]


class CartStruct(msgspec.Struct):
    user: str
    items: list[str]


MODELS: dict[str, type[Any]] = {"dataclass": CartData, "pydantic": CartModel,
                                "msgspec": CartStruct}


@get("/inc")
async def inc(request: AnyRequest) -> str:
    n = request.session.get("n", 0)
    await asyncio.sleep(float(request.query_params.get("delay", "0.005")))
    request.session["n"] = n + 1
    return str(n + 1)


@get("/n")
async def read_n(request: AnyRequest) -> str:
    return str(request.session.get("n", 0))


@get("/hello")
async def hello() -> str:
    return "hello"


@get("/data")
async def data(request: AnyRequest) -> dict[str, Any]:
    return dict(request.session)


@get("/boom")
async def boom(request: AnyRequest) -> str:
    request.session["n"] = 999
    raise RuntimeError("handler failed after changing the session")


@get("/login")
async def login(request: AnyRequest) -> str:
    """Regenerate, through the session object ``request.session`` is."""
    user = request.query_params["user"]
    session = await load_session(request)
    session.regenerate()
    session["user"] = user
    return "ok"


@get("/set")
async def set_session(request: AnyRequest) -> str:
    user = request.query_params["user"]
    request.set_session({"user": user, "items": []})
    return "ok"


@get("/set-model")
async def set_model(request: AnyRequest) -> str:
    kind, user = request.query_params["kind"], request.query_params["user"]
    request.set_session(MODELS[kind](user=user, items=["a", "b"]))
    return "ok"


@get("/set-then-fail")
async def set_then_fail(request: AnyRequest) -> str:
    request.set_session({"user": "mallory"})
    raise RuntimeError("handler failed after replacing the session")


@get("/early-then-set")
async def early_then_set(request: AnyRequest) -> str:
    """Commit early, then replace: the replacement cannot be saved."""
    session = await load_session(request)
    session["n"] = session.get("n", 0) + 1
    await session.commit()
    request.set_session({"n": -1})
    return "ok"


@get("/set-bad")
async def set_bad(request: AnyRequest) -> str:
    kind = request.query_params["kind"]
    bad: dict[str, Any] = {"number": 42, "text": "just text", "set": {1, 2}}
    request.scope["session"] = bad[kind]
    return "ok"


@get("/set-none")
async def set_none(request: AnyRequest) -> str:
    request.scope["session"] = None
    return "ok"


@get("/clear")
async def clear(request: AnyRequest) -> str:
    request.clear_session()
    return "ok"


@get("/loaded/set")
async def loaded_set(request: AnyRequest) -> str:
    """Load the session (lock mode lazy), then replace it."""
    user = request.query_params["user"]
    await load_session(request)
    request.set_session({"user": user})
    return "ok"


@get("/loaded/data")
async def loaded_data(request: AnyRequest) -> dict[str, Any]:
    return dict(await load_session(request, "read"))


@get("/snapshot/set")
async def snapshot_set(request: AnyRequest) -> str:
    """A replacement under lock mode read, where nothing is saved."""
    user = request.query_params["user"]
    request.set_session({"user": user})
    return "ok"


@get("/snapshot/same")
async def snapshot_same(request: AnyRequest) -> str:
    """An equal copy under lock mode read: no change."""
    request.set_session(dict(request.session))
    return "ok"


@get("/snapshot/clear")
async def snapshot_clear(request: AnyRequest) -> str:
    request.clear_session()
    return "ok"


HANDLERS = [inc, read_n, hello, data, boom, login, set_session, set_model, set_then_fail,
            early_then_set, set_bad, set_none, clear, loaded_set, loaded_data, snapshot_set,
            snapshot_same, snapshot_clear]

MODES = [Rule("read", paths=["/n", "/snapshot"])]


def build_app(store: Store, **options: Any) -> Litestar:
    """Litestar makes a middleware per route handler: they share ``store``.
    (Litestar's logging config is left out: it would reconfigure the test
    process's logging.)"""
    options.setdefault("secret_key", SECRET)
    options.setdefault("lock_mode", MODES)
    return Litestar(route_handlers=HANDLERS, on_shutdown=[store.aclose], logging_config=None,
                    middleware=[DefineMiddleware(SessionMiddleware, store=store, **options)])


def build_wrapped_app(store: Store, **options: Any) -> SessionMiddleware:
    """The other way to add it: one middleware around the whole Litestar app,
    which the lifespan passes through (the start-up check, the store closed)."""
    options.setdefault("secret_key", SECRET)
    options.setdefault("lock_mode", MODES)
    return SessionMiddleware(Litestar(route_handlers=HANDLERS, logging_config=None),
                             store=store, **options)


def app_from_env() -> Litestar:
    """For uvicorn: the store named by SESSIONWARE_TEST_STORE (see tests/support/apps/stores.py)."""
    from tests.support.apps.stores import store_from_spec

    return build_app(store_from_spec(os.environ["SESSIONWARE_TEST_STORE"]))
