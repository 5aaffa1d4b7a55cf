"""FastAPI dependencies: only the endpoints that declare the session lock it.

::

    from fastapi import FastAPI
    from sessionware import SessionMiddleware
    from sessionware.fastapi import LockedSession, ReadSession

    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=..., secret_key=..., lock_mode="lazy")

    @app.post("/cart")
    async def add(item: str, session: LockedSession) -> dict[str, int]:
        session.setdefault("cart", []).append(item)   # locked until the response
        return {"items": len(session["cart"])}

    @app.get("/cart")
    async def show(session: ReadSession) -> list[str]:
        return session.get("cart", [])                # a snapshot: no lock, no wait

    @app.get("/health")
    async def health() -> str:                        # no store trip, no waiting
        return "ok"

With ``lock_mode="lazy"`` an endpoint that declares neither costs no store trip
and never waits behind the user's other requests. The dependencies work in the
other lock modes too: they return the session the middleware loaded.

The names are the other drivers': :func:`uses_session` declares the session
(here a dependency, ``dependencies=[uses_session()]``), and
:func:`load_session` and :func:`commit_session` (those of
:mod:`sessionware.loading`) load and commit it by request.
"""

from __future__ import annotations

from typing import Annotated, Any

try:
    from fastapi import Depends
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sessionware.fastapi needs FastAPI: pip install fastapi") from exc
from starlette.requests import HTTPConnection

from sessionware.loading import commit_session, load_mode, load_session
from sessionware.modes import LockMode
from sessionware.session import Session

__all__ = ["LockedSession", "ReadSession", "commit_session", "load_session", "locked_session",
           "read_session", "uses_session"]


async def locked_session(connection: HTTPConnection) -> Session:
    """The request's session, locked until the response starts."""
    return await load_session(connection, LockMode.EXCLUSIVE)


async def read_session(connection: HTTPConnection) -> Session:
    """The request's session as last committed: no lock, no wait; changes raise."""
    return await load_session(connection, LockMode.READ)


def uses_session(mode: LockMode | str = LockMode.EXCLUSIVE) -> Any:
    """Declare the session, FastAPI's way: a dependency that loads it in
    ``mode`` before the endpoint runs. On a route or router,
    ``dependencies=[uses_session()]``; as a parameter that receives it,
    ``session: Annotated[Session, uses_session("read")]`` (what
    :data:`LockedSession` and :data:`ReadSession` are)."""
    chosen = load_mode(mode)
    return Depends(locked_session if chosen is LockMode.EXCLUSIVE else read_session)


LockedSession = Annotated[Session, uses_session(LockMode.EXCLUSIVE)]
"""An endpoint parameter ``session: LockedSession`` locks and loads the session."""

ReadSession = Annotated[Session, uses_session(LockMode.READ)]
"""An endpoint parameter ``session: ReadSession`` loads a read-only snapshot."""
