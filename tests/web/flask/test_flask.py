"""Flask integration: ``flask.session`` is the locked session.

The behaviour through Flask's test client, on the sync face of MemoryStore.
The promise end to end, the Flask app under real servers (gunicorn with
--preload, waitress, flask run), is tests/web/wsgi/test_servers.py's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient

from sessionware import ConfigurationError, CookieOptions, Rule
from sessionware.cookies import CookieSigner
from sessionware.flask import FlaskSession, Sessionware
from sessionware.stores import MemoryStore
from sessionware.wsgi import WSGISessionMiddleware
from tests.support.apps.flask_counter import SECRET, build_app

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app() -> Iterator[AppFactory]:
    apps: list[Flask] = []

    def factory(**options: Any) -> Flask:
        options.setdefault("lock_mode", [Rule("none", paths=["/static"])])
        apps.append(build_app(MemoryStore(), **options))
        return apps[-1]

    yield factory
    for app in apps:
        app.extensions["sessionware"].close()


@pytest.fixture
def client(make_app: AppFactory) -> FlaskClient:
    return make_app().test_client()


def set_cookie_headers(response: Any) -> list[str]:
    headers: list[str] = response.headers.getlist("Set-Cookie")
    return headers


def cookie_value(client: FlaskClient, name: str = "session") -> str:
    cookie = client.get_cookie(name)
    assert cookie is not None
    return cookie.value


# -- the test client ------------------------------------------------------------------

def test_session_round_trips(client: FlaskClient) -> None:
    first = client.get("/inc")
    assert first.text == "1"
    (header,) = set_cookie_headers(first)
    assert header.startswith("session=") and "SameSite=Lax" in header
    assert "Cookie" in first.headers["Vary"]
    for expected in ("2", "3"):
        response = client.get("/inc")
        assert response.text == expected
        assert not set_cookie_headers(response)
    assert client.get("/n").text == "3"


def test_flask_session_is_the_locked_session(make_app: AppFactory) -> None:
    app = make_app()

    @app.get("/kind")
    def kind() -> str:
        return type(session._get_current_object()).__name__  # type: ignore[attr-defined]

    assert app.test_client().get("/kind").text == FlaskSession.__name__
    assert isinstance(app.wsgi_app, WSGISessionMiddleware)


@pytest.mark.parametrize("propagate", [False, True])
def test_view_that_raises_changes_nothing(make_app: AppFactory, propagate: bool) -> None:
    client = make_app(config={"PROPAGATE_EXCEPTIONS": propagate}).test_client()
    client.get("/inc")
    if propagate:
        with pytest.raises(RuntimeError):
            client.get("/boom")
    else:
        response = client.get("/boom")  # Flask's own 500 page
        assert response.status_code == 500
        assert not set_cookie_headers(response)
    assert client.get("/inc").text == "2"  # nothing saved, and the lock is free


def test_a_5xx_returned_by_a_view_changes_nothing(client: FlaskClient) -> None:
    client.get("/inc")
    assert client.get("/unavailable").status_code == 503
    assert client.get("/n").text == "1"


def test_http_errors_raised_on_purpose_are_responses(client: FlaskClient) -> None:
    client.get("/inc")
    assert client.get("/forbidden").status_code == 403
    assert client.get("/n").text == "2"


def test_regenerate_and_invalidate(client: FlaskClient) -> None:
    client.get("/inc")
    old = cookie_value(client)
    assert client.get("/login").text == "ok"
    new = cookie_value(client)
    assert new != old
    assert client.get("/n").text == "1"
    response = client.get("/logout")
    assert "Max-Age=0" in set_cookie_headers(response)[0]
    assert client.get("/n").text == "0"
    client.set_cookie("session", old)
    assert client.get("/n").text == "0"


def test_early_commit_in_a_streamed_response(client: FlaskClient) -> None:
    client.get("/inc")
    assert client.get("/early").text == "committed;2"
    assert client.get("/inc").text == "3"


def test_no_session_in_lock_mode_none_says_why(client: FlaskClient) -> None:
    text = client.get("/static/x").text
    assert text.startswith("refused: no session in this request")


# -- configuration --------------------------------------------------------------------

def test_cookie_config_is_honoured(make_app: AppFactory) -> None:
    client = make_app(config={
        "SESSION_COOKIE_NAME": "sid", "SESSION_COOKIE_DOMAIN": "example.org",
        "SESSION_COOKIE_PATH": "/app", "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": False, "SESSION_COOKIE_SAMESITE": "Strict",
        "SESSION_COOKIE_PARTITIONED": True,
    }).test_client()
    (header,) = set_cookie_headers(client.get("/inc", base_url="https://example.org/"))
    attributes = header.split("; ")
    assert attributes[0].startswith("sid=")
    assert {"Path=/app", "Domain=example.org", "Secure", "SameSite=Strict",
            "Partitioned"} <= set(attributes)
    assert "HttpOnly" not in attributes


def test_flask_defaults_keep_sessionware_defaults(make_app: AppFactory) -> None:
    app = make_app(config={"APPLICATION_ROOT": "/root"})
    (plain,) = set_cookie_headers(app.test_client().get("/inc"))
    assert "SameSite=Lax" in plain and "Secure" not in plain and "Path=/root" in plain
    (tls,) = set_cookie_headers(app.test_client().get("/inc", base_url="https://localhost"))
    assert "Secure" in tls


def test_cookie_option_replaces_the_config(make_app: AppFactory) -> None:
    client = make_app(config={"SESSION_COOKIE_NAME": "ignored"},
                      cookie=CookieOptions(name="mine")).test_client()
    assert set_cookie_headers(client.get("/inc"))[0].startswith("mine=")


OLD, NEW = "old-key-0123456789abcdef0123456789", "new-key-0123456789abcdef0123456789"


def test_secret_key_fallbacks_rotate_keys(make_app: AppFactory) -> None:
    store = MemoryStore()
    old_app = build_app(store, config={"SECRET_KEY": OLD})
    old_client = old_app.test_client()
    old_client.get("/inc")
    old_cookie = cookie_value(old_client)
    new_app = build_app(store, config={"SECRET_KEY": NEW, "SECRET_KEY_FALLBACKS": [OLD]})
    client = new_app.test_client()
    client.set_cookie("session", old_cookie)
    assert client.get("/n").text == "1"
    fresh = make_app(config={"SECRET_KEY": NEW.encode(), "SECRET_KEY_FALLBACKS": [OLD]})
    fresh.test_client().get("/inc")  # bytes keys work
    new_client = new_app.test_client()
    new_client.get("/inc")
    assert CookieSigner(NEW).unsign(cookie_value(new_client)) is not None
    new_app.extensions["sessionware"].close()


def test_a_secret_key_is_required() -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        Sessionware(app, store=MemoryStore())


def test_init_app_for_app_factories() -> None:
    sessions = Sessionware(store=MemoryStore(), secret_key=SECRET, idle_timeout=60)
    app = Flask(__name__)
    middleware = sessions.init_app(app, lock_timeout=1)
    assert app.extensions["sessionware"] is middleware
    assert middleware.core.config.idle_timeout == 60
    assert middleware.core.config.lock_timeout == 1
    middleware.close()


def test_missing_flask_names_the_extra_to_install() -> None:
    code = "import sys; sys.modules['flask'] = None; import sessionware.flask"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert "pip install sessionware[flask]" in result.stderr


def test_permanent_session_lifetime_is_not_the_idle_timeout(make_app: AppFactory) -> None:
    app = make_app(config={"PERMANENT_SESSION_LIFETIME": timedelta(seconds=5)})
    assert app.extensions["sessionware"].core.config.idle_timeout == 20 * 60


def test_options_are_checked_when_sessionware_is_made() -> None:
    """Not at init_app: an app factory learns of a misspelt option at import."""
    with pytest.raises(ConfigurationError, match="did you mean 'idle_timeout'"):
        Sessionware(store=MemoryStore(), idle_timout=60)  # type: ignore[call-arg]


@pytest.mark.parametrize(("config", "given", "named"), [
    ({"SECRET_KEY": "sh0rt"}, None, "app.config['SECRET_KEY']"),
    ({"SECRET_KEY": SECRET, "SECRET_KEY_FALLBACKS": [SECRET, b"sh0rt"]}, None,
     "app.config['SECRET_KEY_FALLBACKS'][1]"),
    ({"SECRET_KEY": SECRET}, "sh0rt", "secret_key"),
    ({}, [SECRET, "sh0rt"], "secret_key[1]"),
])
def test_a_short_key_is_named_as_the_app_set_it(
        config: dict[str, Any], given: Any, named: str) -> None:
    """Flask's keys come from its config: the error names the config key,
    not the secret_key[0] they become in the middleware (issue 29)."""
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigurationError) as info:
        Sessionware(app, store=MemoryStore(), secret_key=given)
    message = str(info.value)
    assert message.startswith(f"{named} is 5 bytes long"), message
    assert "sh0rt" not in message
