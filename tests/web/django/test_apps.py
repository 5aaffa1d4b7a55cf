"""Django's own apps on the locked session, unchanged: contrib.auth (login,
logout, the test client's force_login), contrib.messages' session storage,
CSRF_USE_SESSIONS, ``manage.py clearsessions``; and revoke_user after a login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import AsyncClient, Client, override_settings

from sessionware import SyncSessionAdmin
from sessionware.stores import SQLiteStore, Store
from tests.web.django.conftest import Configure, stored_rows, wait_until

COOKIE = "sessionid"


@pytest.fixture
def user() -> Iterator[Any]:
    from django.contrib.auth.models import User  # once Django is set up

    made = User.objects.create_user("ann", password="secret-pw")
    yield made
    made.delete()


def admin(store: Store) -> SyncSessionAdmin:
    return SyncSessionAdmin(store.sync(), secret_key=settings.SECRET_KEY)


def test_login_cycles_the_key_and_logout_flushes(configure: Configure, user: Any) -> None:
    client = Client()
    client.get("/inc")
    anonymous = client.cookies[COOKIE].value
    answer = client.post("/login", {"username": "ann", "password": "secret-pw"})
    assert answer.content == b"hello ann"
    logged_in = client.cookies[COOKIE].value
    assert logged_in != anonymous  # login cycled the key
    assert client.get("/whoami").content == b"ann"
    assert client.get("/n").content == b"1"  # the anonymous session's data came along
    other = Client()
    other.cookies[COOKIE] = anonymous
    assert other.get("/whoami").content == b"anonymous"  # the old id is dead
    assert client.post("/logout").content == b"bye"
    assert client.cookies[COOKIE].value == ""  # expired
    replay = Client()
    replay.cookies[COOKIE] = logged_in
    assert replay.get("/whoami").content == b"anonymous"  # logged out everywhere


def test_a_login_binds_the_user_for_revoke_user(
        configure: Configure, store: Store, user: Any) -> None:
    client = Client()
    client.post("/login", {"username": "ann", "password": "secret-pw"})
    laptop = Client()
    laptop.force_login(user)  # the engine outside a request: bound the same way
    assert laptop.get("/whoami").content == b"ann"
    sessions = admin(store)
    assert len(sessions.user_sessions(str(user.pk))) == 2
    assert len(sessions.revoke_user(str(user.pk))) == 2
    assert client.get("/whoami").content == b"anonymous"
    assert laptop.get("/whoami").content == b"anonymous"


def test_the_test_clients_session_idiom(configure: Configure) -> None:
    client = Client()
    session = client.session  # made and saved empty, its key in the cookie
    session["n"] = 41
    session.save()
    assert client.get("/inc").content == b"42"


async def test_alogin_in_an_async_view(aconfigure: Configure, user: Any) -> None:
    client = AsyncClient()
    await client.get("/ainc")
    answer = await client.post("/alogin", {"username": "ann", "password": "secret-pw"})
    assert answer.content == b"hello ann"
    assert (await client.get("/whoami")).content == b"ann"
    assert (await client.get("/an")).content == b"1"


def test_messages_live_in_the_session(configure: Configure) -> None:
    client = Client()
    client.get("/message", {"text": "saved"})
    assert client.get("/messages").content == b"saved"
    assert client.get("/messages").content == b""  # shown once


def test_csrf_with_csrf_use_sessions(configure: Configure) -> None:
    client = Client(enforce_csrf_checks=True)
    token = client.get("/csrf").content.decode()
    assert "csrftoken" not in client.cookies  # the secret lives in the session
    assert client.post("/form", {"value": "x"}).status_code == 403
    assert client.post("/form", {"value": "x"}, headers={"X-CSRFToken": token}).content == (
        b"posted x")


def test_clearsessions_purges_expired_sessions(tmp_path: Path) -> None:
    path = tmp_path / "purged.db"
    store = SQLiteStore(str(path))

    try:
        with override_settings(SESSIONWARE={"STORE": store, "IDLE_TIMEOUT": 0.2}):
            Client().get("/inc")
            assert stored_rows(path) == 1
            sessions = admin(store)
            wait_until(lambda: sessions.stats().sessions == 0)  # expired, still stored
            assert stored_rows(path) == 1
            call_command("clearsessions")
            assert stored_rows(path) == 0
    finally:
        store.sync().close()
