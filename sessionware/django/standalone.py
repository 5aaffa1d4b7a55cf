"""The engine's calls outside a request: ``SessionStore(key)`` made by hand, by
Django's test client (``client.session``, ``force_login``) or a shell.

Each call is one short transaction of its own: ``load`` reads the last
committed snapshot (no lock is kept between calls), ``save`` locks, writes
the data and unlocks, so the last ``save`` wins, as with Django's own
engines. ``session_key`` is the signed cookie value; a ``save`` that leaves no
session (empty data on a new or dead key) makes an empty one, because Django
expects a key after every ``save``. Each call has its async twin on the
async face (``asave``...), used by Django's ``AsyncClient``.
"""

from __future__ import annotations

from typing import Any

from sessionware._async.core import RETIRED, SessionCore
from sessionware._sync.core import SyncSessionCore
from sessionware.cookies import read_cookie, store_key
from sessionware.modes import LockMode
from sessionware.session import Session, SessionState

__all__ = ["adelete", "aexists", "aread", "awrite", "delete", "exists", "read", "write"]


def read(core: SyncSessionCore, key: str | None) -> dict[str, Any]:
    tx = core.open(key, LockMode.READ, https=False)
    try:
        return _snapshot(tx.session)
    finally:
        tx.close()


async def aread(core: SessionCore, key: str | None) -> dict[str, Any]:
    tx = await core.open(key, LockMode.READ, https=False)
    try:
        return _snapshot(tx.session)
    finally:
        await tx.close()


def write(core: SyncSessionCore, key: str | None, data: dict[str, Any], *,
          regenerate: bool = False) -> str:
    """Lock the session ``key`` names, replace its data and unlock; returns
    the key it lives under now (new when it was regenerated or made)."""
    tx = core.open(key, LockMode.EXCLUSIVE, https=False)
    try:
        value = _cookie_value(tx.commit(), core) if _replace(tx.session, data, regenerate) else ""
    finally:
        tx.close()
    if value:
        return value
    if value == "" or key is None:  # no live session under the key: make one
        return core.signer.sign(core.create(core.serializer.dumps(data)))
    return key


async def awrite(core: SessionCore, key: str | None, data: dict[str, Any], *,
                 regenerate: bool = False) -> str:
    tx = await core.open(key, LockMode.EXCLUSIVE, https=False)
    try:
        replaced = _replace(tx.session, data, regenerate)
        value = _cookie_value(await tx.commit(), core) if replaced else ""
    finally:
        await tx.close()
    if value:
        return value
    if value == "" or key is None:
        return core.signer.sign(await core.create(core.serializer.dumps(data)))
    return key


def delete(core: SyncSessionCore, key: str) -> None:
    tx = core.open(key, LockMode.EXCLUSIVE, https=False)
    try:
        if tx.session.state is SessionState.OPEN:
            tx.session.invalidate()
        tx.commit()
    finally:
        tx.close()


async def adelete(core: SessionCore, key: str) -> None:
    tx = await core.open(key, LockMode.EXCLUSIVE, https=False)
    try:
        if tx.session.state is SessionState.OPEN:
            tx.session.invalidate()
        await tx.commit()
    finally:
        await tx.close()


def exists(core: SyncSessionCore, key: str) -> bool:
    session_id = core.signer.unsign(key)
    if session_id is None:
        return False
    core.ensure_ready()
    return core.guard(core.store.read, store_key(session_id)) not in (None, RETIRED)


async def aexists(core: SessionCore, key: str) -> bool:
    session_id = core.signer.unsign(key)
    if session_id is None:
        return False
    await core.ensure_ready()
    return await core.guard(core.store.read, store_key(session_id)) not in (None, RETIRED)


def _snapshot(session: Session) -> dict[str, Any]:
    return dict(session) if session.state is not SessionState.RETIRED else {}


def _replace(session: Session, data: dict[str, Any], regenerate: bool) -> bool:
    """Put ``data`` in ``session``; ``False`` if it cannot take it (a concurrent
    login retired its id: a new session is made for the data instead)."""
    if session.state is not SessionState.OPEN:
        return False
    session.clear()
    session.update(data)
    if regenerate and data:
        session.regenerate()
    elif regenerate:  # nothing to move: the old session ends, an empty one is made
        session.invalidate()
    return True


def _cookie_value(headers: list[str], core: SyncSessionCore | SessionCore) -> str | None:
    """The value the commit's Set-Cookie gives the session cookie: ``""`` when
    it expires the cookie, ``None`` without a Set-Cookie."""
    name = core.config.cookie.full_name
    for header in headers:
        value = read_cookie(header.split(";", 1)[0], name)
        if value is not None:
            return value
    return None
