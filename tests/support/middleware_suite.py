"""The middlewares' behaviour, written once and run against every store, on
both faces: the ASGI middleware over the store's async face, and the WSGI
middleware over its sync face (``face``, see tests/support/faces.py).

A store joins by subclassing :class:`MiddlewareSuite` in a ``test_*.py`` module
and overriding the ``fresh_store`` fixture (a new store of its async class, not
set up). Requests go through the real middleware and a real app, in process
(tests/support/apps/served.py: Starlette on the async face, a plain WSGI app served a
thread per request on the sync face), concurrently where the point is
concurrency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from sessionware.cookies import CookieSigner, new_session_id, store_key
from sessionware.stores import Store
from tests.support.apps.counter import SECRET
from tests.support.apps.served import Served, ServedASGI, build
from tests.support.faces import sync_face
from tests.support.helpers import (
    CountingStore,
    SyncCountingStore,
    cookie_header,
    session_cookie,
    set_cookies,
)

AppFactory = Callable[..., Served]
Counting = CountingStore | SyncCountingStore
ReadStored = Callable[[str], Awaitable[bytes | None]]


class MiddlewareSuite:
    @pytest.fixture
    def fresh_store(self) -> Store:  # pragma: no cover - overridden by every store
        raise NotImplementedError

    @pytest.fixture
    async def counting(self, fresh_store: Store, face: str) -> AsyncIterator[Counting]:
        """The store on this face, its operations counted; closed at the end."""
        if face == "async":
            try:
                yield CountingStore(fresh_store)
            finally:
                await fresh_store.aclose()
        else:
            sync_counted = SyncCountingStore(sync_face(fresh_store))
            try:
                yield sync_counted
            finally:
                sync_counted.close()

    @pytest.fixture
    def read_stored(self, counting: Counting) -> ReadStored:
        """What the store holds under a key, read past the middleware."""
        async def read(key: str) -> bytes | None:
            inner = counting.inner
            if isinstance(counting, CountingStore):
                return await inner.read(key)  # type: ignore[no-any-return,misc]
            return await asyncio.to_thread(inner.read, key)  # type: ignore[arg-type]
        return read

    @pytest.fixture
    def make_app(self, counting: Counting) -> Iterator[AppFactory]:
        made: list[Served] = []

        def factory(**options: Any) -> Served:
            made.append(build(counting, **options))
            return made[-1]

        yield factory
        for served in made:
            served.release()  # no handler outlives its test

    @pytest.fixture
    async def client(self, make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
        async with make_app().client() as client:
            yield client

    # -- the basics ---------------------------------------------------------

    async def test_untouched_request_without_cookie_costs_nothing(
        self, client: httpx.AsyncClient, counting: Counting
    ) -> None:
        for path in ("/hello", "/n", "/static/x"):
            response = await client.get(path)
            assert not set_cookies(response), path
        assert counting.total() == 0

    async def test_first_write_issues_a_signed_strict_cookie(
        self, client: httpx.AsyncClient, counting: Counting, read_stored: ReadStored
    ) -> None:
        response = await client.get("/inc")
        assert response.text == "1"
        (header,) = set_cookies(response)
        assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
        assert "Secure" not in header
        assert counting.calls["create"] == 1
        value = session_cookie(response)
        assert value is not None
        session_id = CookieSigner(SECRET).unsign(value)
        assert session_id is not None and len(session_id) == 43
        assert await read_stored(store_key(session_id)) == b'{"n":1}'
        assert await read_stored(session_id) is None  # keyed by hash only

    async def test_https_cookies_are_secure(self, make_app: AppFactory) -> None:
        async with make_app().client(base_url="https://testserver") as client:
            (header,) = set_cookies(await client.get("/inc"))
        assert "Secure" in header

    async def test_session_round_trips_and_cookie_is_set_once(
        self, client: httpx.AsyncClient, counting: Counting
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        for expected in ("2", "3"):
            response = await client.get("/inc", headers=cookie_header(cookie))
            assert response.text == expected
            assert not set_cookies(response)
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "3"

    async def test_round_trips_are_two_one_zero(
        self, client: httpx.AsyncClient, counting: Counting
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        counting.calls.clear()
        await client.get("/inc", headers=cookie_header(cookie))
        assert dict(counting.calls) == {"acquire": 1, "commit": 1}
        counting.calls.clear()
        await client.get("/n", headers=cookie_header(cookie))
        assert dict(counting.calls) == {"read": 1}
        counting.calls.clear()
        await client.get("/hello", headers=cookie_header(cookie))
        assert dict(counting.calls) == {"acquire": 1, "release": 1}

    async def test_a_first_burst_sets_the_store_up_once(
        self, client: httpx.AsyncClient, counting: Counting
    ) -> None:
        responses = await asyncio.gather(*(client.get("/inc?delay=0") for _ in range(30)))
        assert {r.status_code for r in responses} == {200}
        assert counting.calls["setup"] == 1

    # -- the promise: no lost updates ------------------------------------------

    async def test_concurrent_increments_are_all_kept(self, client: httpx.AsyncClient) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        responses = await asyncio.gather(
            *(client.get("/inc", headers=cookie_header(cookie)) for _ in range(50)))
        assert sorted(int(r.text) for r in responses) == list(range(2, 52))
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "51"

    async def test_failed_request_changes_nothing_and_frees_the_lock(
        self, client: httpx.AsyncClient
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        with pytest.raises(RuntimeError):
            await client.get("/boom", headers=cookie_header(cookie))
        response = await asyncio.wait_for(
            client.get("/inc", headers=cookie_header(cookie)), 2.0)
        assert response.text == "2"

    @pytest.mark.faces("async")  # a WSGI request thread cannot be cancelled (web/wsgi/)
    async def test_a_cancelled_request_releases_the_lock_without_writing(
        self, make_app: AppFactory
    ) -> None:
        """A client gone away: the server cancels the request mid-handler."""
        app = make_app()
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            holder = await _holding(app, client, "/hold", cookie)
            holder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await holder
            response = await asyncio.wait_for(
                client.get("/inc?delay=0", headers=cookie_header(cookie)), 2.0)
            assert response.text == "2"  # the cancelled request's +1000 is gone

    # -- bad cookies: never adopted, never a 500 -----------------------------

    @pytest.mark.parametrize("value", [
        "garbage", "", "a.b.c", "x" * 5000, "é", "\"quoted\"",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.badsig",
    ])
    async def test_garbage_cookies_start_a_fresh_session(
        self, client: httpx.AsyncClient, value: str
    ) -> None:
        response = await client.get("/inc", headers=cookie_header(value))
        assert response.status_code == 200
        assert response.text == "1"
        assert session_cookie(response) not in (None, "", value)

    async def test_tampered_cookie_is_not_adopted(self, client: httpx.AsyncClient) -> None:
        cookie = session_cookie(await client.get("/put?key=user&value=alice"))
        assert cookie
        tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        response = await client.get("/n", headers=cookie_header(tampered))
        assert response.text == "0"
        assert session_cookie(response) == ""  # the stale cookie is expired

    async def test_unknown_but_validly_signed_id_is_not_adopted(
        self, client: httpx.AsyncClient
    ) -> None:
        planted = new_session_id()
        cookie = CookieSigner(SECRET).sign(planted)
        response = await client.get("/inc", headers=cookie_header(cookie))
        assert response.text == "1"
        issued = CookieSigner(SECRET).unsign(session_cookie(response) or "")
        assert issued is not None and issued != planted

    async def test_key_rotation_accepts_old_cookies_and_signs_with_the_new_key(
        self, make_app: AppFactory
    ) -> None:
        async with make_app(secret_key="old" * 11).client() as client:
            old_cookie = session_cookie(await client.get("/inc"))
        assert old_cookie
        async with make_app(secret_key=["new" * 11, "old" * 11]).client() as client:
            assert (await client.get("/n", headers=cookie_header(old_cookie))).text == "1"
            fresh = session_cookie(await client.get("/inc"))
        assert fresh and CookieSigner("new" * 11).unsign(fresh) is not None
        assert CookieSigner("old" * 11).unsign(fresh) is None

    # -- values that cannot be saved -----------------------------------------

    async def test_oversized_session_is_refused_and_stored_session_kept(
        self, make_app: AppFactory
    ) -> None:
        async with make_app(max_size=1024).client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            response = await client.get("/big?size=5000", headers=cookie_header(cookie))
            assert response.status_code == 500
            assert response.text == "Session could not be saved.\n"
            assert (await client.get("/n", headers=cookie_header(cookie))).text == "1"
            response = await asyncio.wait_for(  # and the lock was released
                client.get("/inc?delay=0", headers=cookie_header(cookie)), 2.0)
            assert response.text == "2"

    async def test_unserializable_value_is_refused_and_stored_session_kept(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            response = await client.get("/unserializable", headers=cookie_header(cookie))
        assert response.status_code == 500
        assert any("JSON" in r.getMessage() for r in caplog.records)
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "1"

    # -- login and logout -----------------------------------------------------

    async def test_regenerate_moves_data_to_a_new_id(self, client: httpx.AsyncClient) -> None:
        old = session_cookie(await client.get("/inc"))
        assert old
        response = await client.get("/login", headers=cookie_header(old))
        new = session_cookie(response)
        assert new and new != old
        assert (await client.get("/n", headers=cookie_header(new))).text == "1"
        assert (await client.get("/n", headers=cookie_header(old))).text == "0"

    async def test_invalidate_deletes_and_expires_the_cookie(
        self, client: httpx.AsyncClient
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        response = await client.get("/logout", headers=cookie_header(cookie))
        assert session_cookie(response) == ""
        assert "Max-Age=0" in set_cookies(response)[0]
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "0"

    async def test_changes_after_invalidate_raise(self, client: httpx.AsyncClient) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        response = await client.get("/invalidate-then-set", headers=cookie_header(cookie))
        assert response.text.startswith("refused: the session was invalidated")
        assert session_cookie(response) == ""
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "0"

    async def test_requests_queued_behind_a_login_keep_its_cookie_and_stay_out(
        self, make_app: AppFactory
    ) -> None:
        """Ten requests with the pre-login cookie wait behind /login: none of
        them may replace the new cookie, and none may enter the new session."""
        app = make_app()
        async with app.client(raise_app_exceptions=False) as client:
            old = session_cookie(await client.get("/inc"))
            assert old
            login = await _holding(app, client, "/login-hold", old)
            queued = [asyncio.create_task(client.get(path, headers=cookie_header(old)))
                      for path in ("/inc", "/hello") * 5]
            core = app.core
            while core.queues.waiting(_key(old)) < 11:  # noqa: ASYNC110 - until queued
                await asyncio.sleep(0.001)
            app.release()
            new = session_cookie(await login)
            assert new and new != old
            for response in await asyncio.gather(*queued):
                assert not set_cookies(response), response.request.url
                assert response.status_code == (200 if response.request.url.path == "/hello"
                                                else 500)  # /inc: SessionClosed
            assert (await client.get("/n", headers=cookie_header(new))).text == "1"
            assert (await client.get("/n", headers=cookie_header(old))).text == "0"

    # -- failed requests commit nothing ------------------------------------------

    @pytest.mark.parametrize("code", [500, 502, 503])
    async def test_a_5xx_response_commits_nothing(
        self, client: httpx.AsyncClient, code: int
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        response = await client.get(f"/status?code={code}", headers=cookie_header(cookie))
        assert response.status_code == code
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "1"
        response = await client.get("/status?code=404", headers=cookie_header(cookie))
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "2"

    async def test_a_5xx_without_a_session_creates_none(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/status?code=500")
        assert response.status_code == 500
        assert not set_cookies(response)

    async def test_commit_on_5xx_opts_in(self, make_app: AppFactory) -> None:
        async with make_app(commit_on_5xx=True).client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            await client.get("/status?code=500", headers=cookie_header(cookie))
            assert (await client.get("/n", headers=cookie_header(cookie))).text == "2"

    async def test_an_apps_own_exception_handler_commits_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        response = await client.get("/handled-failure", headers=cookie_header(cookie))
        assert (response.status_code, response.text) == (500, "handled")
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "1"

    # -- changes that cannot be saved are not dropped in silence -----------------

    async def test_nested_change_after_an_early_commit_is_refused(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        cookie = session_cookie(await client.get("/cart?item=a"))
        assert cookie
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            response = await client.get("/early-nested", headers=cookie_header(cookie))
        assert response.status_code == 500
        assert any("committed" in r.getMessage() for r in caplog.records)
        assert (await client.get("/snapshot/cart", headers=cookie_header(cookie))).text == "a"

    @pytest.mark.parametrize("path", ["/stream-nested", "/early-stream-nested"])
    async def test_nested_change_while_streaming_is_logged(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
    ) -> None:
        cookie = session_cookie(await client.get("/cart?item=a"))
        assert cookie
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            response = await client.get(path, headers=cookie_header(cookie))
        assert (response.status_code, response.text) == (200, "streaming;done")
        (record,) = [r for r in caplog.records if r.name == "sessionware"]
        assert "not saved" in record.getMessage()
        assert (await client.get("/snapshot/cart", headers=cookie_header(cookie))).text == "a"

    async def test_nested_change_in_read_mode_is_refused(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        cookie = session_cookie(await client.get("/cart?item=a"))
        assert cookie
        with caplog.at_level(logging.ERROR, logger="sessionware"):
            response = await client.get("/snapshot/nested", headers=cookie_header(cookie))
        assert response.status_code == 500
        assert any("read-only" in r.getMessage() for r in caplog.records)
        assert (await client.get("/snapshot/cart", headers=cookie_header(cookie))).text == "a"

    # -- lock modes -------------------------------------------------------------

    async def test_read_mode_is_a_read_only_snapshot(self, client: httpx.AsyncClient) -> None:
        cookie = session_cookie(await client.get("/inc"))
        assert cookie
        response = await client.get("/snapshot/mutate", headers=cookie_header(cookie))
        assert response.text.startswith("refused: ")
        assert (await client.get("/n", headers=cookie_header(cookie))).text == "1"

    async def test_read_mode_does_not_wait_for_the_lock(self, make_app: AppFactory) -> None:
        app = make_app()
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            holder = await _holding(app, client, "/hold", cookie)
            response = await asyncio.wait_for(
                client.get("/n", headers=cookie_header(cookie)), 2.0)
            assert response.text == "1"
            app.release()
            await holder
            assert (await client.get("/n", headers=cookie_header(cookie))).text == "1001"

    @pytest.mark.faces("async")  # WSGI has no WebSocket
    async def test_websocket_gets_a_snapshot(self, make_app: AppFactory) -> None:
        app = make_app()
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
        assert cookie
        assert isinstance(app, ServedASGI)
        sent = await _websocket_session(app.app, f"session={cookie}".encode())
        assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send",
                                             "websocket.close"]
        assert sent[1]["text"] == "1"

    # -- waiting --------------------------------------------------------------------

    async def test_lock_timeout_gives_503_with_retry_after(self, make_app: AppFactory) -> None:
        app = make_app(lock_timeout=0.3)
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            holder = await _holding(app, client, "/hold", cookie)
            response = await client.get("/inc", headers=cookie_header(cookie))
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1
            app.release()
            assert (await holder).text == "released"

    async def test_a_long_request_keeps_its_lock_by_renewing_the_lease(
        self, make_app: AppFactory
    ) -> None:
        lease = 0.3
        app = make_app(lease_ttl=lease)
        other_process = make_app(lock_timeout=0.2)  # its own core and queue, same store
        async with app.client() as client, other_process.client() as other:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            holder = await _holding(app, client, "/hold", cookie)
            await asyncio.sleep(4 * lease)  # without renewal the lease would have lapsed
            contender = await other.get("/inc", headers=cookie_header(cookie))
            assert contender.status_code == 503
            app.release()
            assert (await holder).status_code == 200
            assert (await client.get("/n", headers=cookie_header(cookie))).text == "1001"

    async def test_queue_limit_turns_the_excess_away_at_once(
        self, make_app: AppFactory
    ) -> None:
        app = make_app(max_waiting=2)
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            holder = await _holding(app, client, "/hold", cookie)
            waiter = asyncio.create_task(client.get("/inc", headers=cookie_header(cookie)))
            core = app.core
            while core.queues.waiting(_key(cookie)) < 2:  # noqa: ASYNC110 - until queued
                await asyncio.sleep(0.001)
            excess = await asyncio.wait_for(
                client.get("/inc", headers=cookie_header(cookie)), 2.0)
            assert excess.status_code == 503
            app.release()
            assert (await holder).status_code == 200
            assert (await waiter).text == "1002"

    async def test_early_commit_frees_the_lock_during_a_long_response(
        self, make_app: AppFactory
    ) -> None:
        app = make_app()
        async with app.client() as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            streaming = await _holding(app, client, "/early", cookie)
            response = await asyncio.wait_for(
                client.get("/inc", headers=cookie_header(cookie)), 2.0)
            assert response.text == "3"
            app.release()
            assert (await streaming).text == "committed;done"


async def _holding(app: Served, client: httpx.AsyncClient, path: str,
                   cookie: str) -> asyncio.Task[httpx.Response]:
    """Start a request to ``path`` and return once its handler holds the
    session's lock (it blocks until ``app.release()``)."""
    request = asyncio.create_task(client.get(path, headers=cookie_header(cookie)))
    await app.holding()
    return request


async def _websocket_session(app: Starlette, cookie: bytes) -> list[dict[str, Any]]:
    """Drive one WebSocket connection through the ASGI app, as a server would."""
    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"",
             "headers": [(b"cookie", cookie)], "scheme": "ws", "server": ("testserver", 80),
             "client": ("127.0.0.1", 1), "subprotocols": [], "root_path": "",
             "asgi": {"version": "3.0"}}
    inbox = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(3600)  # pragma: no cover - the app closes first
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


def _key(cookie: str) -> str:
    session_id = CookieSigner(SECRET).unsign(cookie)
    assert session_id is not None
    return store_key(session_id)
