"""A stalled server (SIGSTOP: its connections stay open, nothing answers)
under the middleware, the same check for every store with a server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from sessionware.stores import Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie


class Stallable(Protocol):
    def stall(self) -> None: ...

    def resume(self) -> None: ...


async def stalled_server_answers_503(make_store: Callable[[], Store], server: Stallable,
                                     face: str, *, within: float = 3.0) -> None:
    """A request while ``server`` is stalled is answered 503 within ``within``
    seconds (``store_timeout=0.5``, with room for a slow machine), though the
    store's own timeout is far longer; once the server resumes, the session
    counts on.

    The session is made first under the default ``store_timeout``: a new
    server's first requests can outlast 0.5 s on a loaded machine. Then the
    app under test sets its store up and counts once before the stall. The
    stalled acquire may take the lease once the server wakes up: it lapses
    within ``lease_ttl``, and the next request waits that out."""
    async with serving(make_store(), face) as app, app.client(timeout=30) as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
    async with serving(make_store(), face, store_timeout=0.5, lease_ttl=1.0) as app, \
            app.client(timeout=30) as client:
        response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        assert response.text == "2", response.text
        server.stall()
        try:
            started = time.monotonic()
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
            assert response.status_code == 503, response.text
            assert time.monotonic() - started < within
        finally:
            server.resume()
        response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        assert response.text == "3", response.text
