"""A FastAPI app that locks only the endpoints declaring the session.

Checked by ``mypy --strict`` with the package (pyproject's ``files``): the
dependencies are typed, so ``session.regenerate()`` and ``invalidate()`` are
seen, and a misspelt method is an error. Served by the lazy-mode tests.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from sessionware import SessionMiddleware
from sessionware.fastapi import LockedSession, ReadSession
from sessionware.stores import SQLiteStore

app = FastAPI()
app.add_middleware(SessionMiddleware, store=SQLiteStore(os.environ.get("DB", "lazy.db")),
                   secret_key=os.environ.get("SECRET", "s" * 32), lock_mode="lazy")


@app.post("/cart")
async def add(item: str, session: LockedSession) -> int:
    cart: list[str] = session.setdefault("cart", [])
    cart.append(item)
    return len(cart)


@app.get("/cart")
async def show(session: ReadSession) -> list[str]:
    cart: list[str] = session.get("cart", [])
    return cart


@app.post("/login")
async def login(user: str, session: LockedSession) -> str:
    session.regenerate()
    session["user"] = user
    return user


@app.post("/logout")
async def logout(session: LockedSession) -> None:
    session.invalidate()


@app.get("/health")
async def health() -> str:
    return "ok"
