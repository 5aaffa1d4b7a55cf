"""sessionware.django under Django's sync handler (WSGI), through Django's
test Client: the sync face, the session loaded at its first access."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings

from sessionware import Rule, SyncSessionAdmin
from sessionware.django import SessionStore
from sessionware.stores import Store
from tests.web.django.conftest import Configure, make_store, wait_until

COOKIE = "sessionid"


def cookie_of(client: Client) -> str:
    return client.cookies[COOKIE].value


def with_cookie(value: str, **kwargs: object) -> Client:
    """A client of the session ``value`` names. Django's test client raises in
    its own thread the exceptions of any request (got_request_exception is
    global): clients on threads say ``raise_request_exception=False``."""
    client = Client(**kwargs)
    client.cookies[COOKIE] = value
    return client


@contextmanager
def holding(client: Client, where: Path) -> Iterator[list[HttpResponse]]:
    """Another request of ``client``'s session holds its lock (the ``/hold``
    view, on a thread) while the block runs; its answer lands in the list
    once the block is done."""
    answers: list[HttpResponse] = []
    holder = threading.Thread(target=lambda: answers.append(with_cookie(
        cookie_of(client), raise_request_exception=False).get("/hold", {"dir": str(where)})))
    holder.start()
    try:
        wait_until(lambda: (where / "held").exists())
        yield answers
    finally:
        (where / "release").touch()
        holder.join()


def test_the_session_round_trips(configure: Configure) -> None:
    client = Client()
    first = client.get("/inc")
    assert first.content == b"1"
    morsel = first.cookies[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and not morsel["secure"]
    assert not morsel["max-age"]  # sessionware's default: the browser session
    assert "Cookie" in first.headers["Vary"]
    for expected in (b"2", b"3"):
        response = client.get("/inc")
        assert response.content == expected
        assert COOKIE not in response.cookies  # the same session: no new cookie
    assert client.get("/n").content == b"3"


def test_https_sets_secure(configure: Configure) -> None:
    response = Client().get("/inc", secure=True)
    assert response.cookies[COOKIE]["secure"]


def test_request_session_is_a_session_base(configure: Configure) -> None:
    seen: list[object] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(request.session)
        return HttpResponse()

    from sessionware.django import SessionMiddleware

    SessionMiddleware(view)(_request())
    assert isinstance(seen[0], SessionStore) and isinstance(seen[0], SessionBase)


def _request() -> HttpRequest:
    from django.test import RequestFactory

    return RequestFactory().get("/anything")


def test_session_key_is_the_cookie_value(configure: Configure) -> None:
    client = Client()
    assert client.get("/key").content == b"None"  # a new session has no key yet
    client.get("/inc")
    assert client.get("/key").content.decode() == cookie_of(client)


def test_a_raising_view_changes_nothing_and_releases_the_lock(configure: Configure) -> None:
    configure(LOCK_TIMEOUT=1)
    client = Client()
    client.get("/inc")
    with pytest.raises(RuntimeError, match="view failed"):
        client.get("/boom")  # the test client raises what the view raised
    quiet = with_cookie(cookie_of(client), raise_request_exception=False)
    assert quiet.get("/boom").status_code == 500  # what a server answers
    assert client.get("/inc").content == b"2"  # not 999, and not a 503 for a lock kept


def test_a_5xx_response_changes_nothing_a_4xx_commits(configure: Configure) -> None:
    client = Client()
    client.get("/inc")
    assert client.get("/server-error").status_code == 503
    assert client.get("/n").content == b"1"
    assert client.get("/forbidden").status_code == 403
    assert client.get("/n").content == b"2"


def test_a_streamed_response_commits_before_its_body(configure: Configure) -> None:
    configure(LOCK_TIMEOUT=1)
    client = Client()
    client.get("/inc")
    response = client.get("/stream")
    # the body runs after the commit: the change it tries is refused
    assert b"".join(response.streaming_content) == b"streamed after the commit"
    assert client.get("/n").content == b"2"


def test_cycle_key_keeps_the_data_under_a_new_id(configure: Configure) -> None:
    client = Client()
    client.get("/inc")
    old = cookie_of(client)
    response = client.get("/cycle")
    before, after = response.content.decode().split()
    assert before == old and after == "None"  # no key until the commit names one
    new = cookie_of(client)
    assert new != old
    assert client.get("/n").content == b"1"  # the data moved along
    assert with_cookie(old).get("/n").content == b"0"  # the old id is dead


def test_flush_invalidates(configure: Configure) -> None:
    client = Client()
    client.get("/inc")
    old = cookie_of(client)
    response = client.get("/flush")
    assert response.cookies[COOKIE].value == "" and str(response.cookies[COOKIE]["max-age"]) == "0"
    assert with_cookie(old).get("/n").content == b"0"


def test_read_mode_sees_a_snapshot_without_waiting(configure: Configure, tmp_path: Path) -> None:
    configure(LOCK_TIMEOUT=5)
    client = Client()
    client.get("/inc")
    with holding(client, tmp_path):
        assert client.get("/read").content == b"1"  # answered while the lock is held
        assert client.get("/read-write").content == b"refused"
        assert client.get("/class-read").content == b"read-only"
    assert client.get("/n").content == b"2"


def test_lock_mode_none_gives_no_session(configure: Configure) -> None:
    client = Client()
    client.get("/inc")
    assert client.get("/none").content == b"nothing, refused"
    assert client.get("/n").content == b"1"


def test_lock_mode_rules_and_lazy(configure: Configure) -> None:
    configure(LOCK_MODE=[Rule("none", paths=["/n"])])
    client = Client()
    client.get("/inc")
    assert client.get("/n").content == b"0"  # no session on this path
    configure(setting={"CSRF_USE_SESSIONS": False}, LOCK_MODE="lazy")
    lazy = with_cookie(cookie_of(client), raise_request_exception=False)
    assert lazy.get("/inc").status_code == 500  # undeclared: SessionNotLoaded
    assert lazy.get("/read").content == b"1"  # declared with uses_session("read")


def test_the_mixin_and_as_view_session_mode(configure: Configure) -> None:
    client = Client()
    assert client.get("/class-read").content == b"read-only"
    assert client.get("/class-exclusive").content == b"written"
    assert client.get("/n").content == b"1"


def test_set_expiry_sets_the_cookie_lifetime(configure: Configure) -> None:
    remembered = Client().get("/remember")
    assert str(remembered.cookies[COOKIE]["max-age"]) == "3600"
    forgotten = Client().get("/remember", {"forget": "1"})
    assert not forgotten.cookies[COOKIE]["max-age"]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_concurrent_requests_of_one_session_are_all_applied(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    factory = request.getfixturevalue("redis_server_factory") if kind == "redis" else None
    store = make_store(kind, tmp_path, factory)
    try:
        with override_settings(SESSIONWARE={"STORE": store}):
            first = Client()
            first.get("/inc")
            cookie = cookie_of(first)
            threads = [threading.Thread(target=lambda: with_cookie(cookie).get(
                "/inc", {"delay": "0.01"})) for _ in range(19)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert first.get("/n").content == b"20"
    finally:
        store.sync().close()


def test_a_lock_wait_too_long_answers_503(configure: Configure, tmp_path: Path) -> None:
    configure(LOCK_TIMEOUT=0.2)
    client = Client()
    client.get("/inc")
    with holding(client, tmp_path):
        # loaded at its first access, in the view: the failure still answers 503
        busy = with_cookie(cookie_of(client), raise_request_exception=False).get("/inc")
        assert busy.status_code == 503 and "Retry-After" in busy.headers
    assert client.get("/n").content == b"2"


def test_a_lost_lease_answers_409_and_writes_nothing(
        configure: Configure, store: Store, tmp_path: Path) -> None:
    client = Client()
    client.get("/inc")
    with holding(client, tmp_path) as answers:
        admin = SyncSessionAdmin(store.sync(), secret_key=settings.SECRET_KEY)
        assert admin.revoke(cookie_of(client))
    assert answers[0].status_code == 409
    assert b"lease lost" in answers[0].content
    assert client.get("/n").content == b"0"  # revoked, and nothing written back
