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
"""

from __future__ import annotations

from typing import Annotated

try:
    from fastapi import Depends
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sessionware.fastapi needs FastAPI: pip install fastapi") from exc
from starlette.requests import HTTPConnection

from sessionware.loading import load_session
from sessionware.modes import LockMode
from sessionware.session import Session

__all__ = ["LockedSession", "ReadSession", "locked_session", "read_session"]


async def locked_session(connection: HTTPConnection) -> Session:
    """The request's session, locked until the response starts."""
    return await load_session(connection, LockMode.EXCLUSIVE)


async def read_session(connection: HTTPConnection) -> Session:
    """The request's session as last committed: no lock, no wait; changes raise."""
    return await load_session(connection, LockMode.READ)


LockedSession = Annotated[Session, Depends(locked_session)]
"""An endpoint parameter ``session: LockedSession`` locks and loads the session."""

ReadSession = Annotated[Session, Depends(read_session)]
"""An endpoint parameter ``session: ReadSession`` loads a read-only snapshot."""
