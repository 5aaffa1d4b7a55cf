"""Django configured once per test process, from the test project
(tests/support/apps/django_site), with a SQLite database of the run's own;
each test gives it a store of its own through ``override_settings``."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from sessionware.stores import MemoryStore, RedisStore, SQLiteStore, Store

SETTINGS_MODULE = "tests.support.apps.django_site.settings"

Configure = Callable[..., None]


@pytest.fixture(scope="session", autouse=True)
def django_site(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        os.environ["SESSIONWARE_DJANGO_DB"] = str(tmp_path_factory.mktemp("django") / "db.sqlite3")
        django.setup()
    call_command("migrate", verbosity=0)


def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)


def stored_rows(database: Path) -> int:
    """How many sessions a SQLiteStore's database holds, expired ones too."""
    with closing(sqlite3.connect(database)) as db:
        count: int = db.execute("SELECT count(*) FROM sessionware_sessions").fetchone()[0]
    return count


def make_store(kind: str, tmp_path: Path, redis_server_factory: Any = None) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(str(tmp_path / "sessions.db"))
    return RedisStore(url=redis_server_factory().url)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store for the sync face (WSGI requests, the engine outside requests)."""
    made = make_store(request.param, tmp_path)
    yield made
    made.sync().close()


@pytest.fixture(params=["memory", "sqlite"])
async def astore(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A store for the async face (ASGI requests); the start-up's store check
    uses the sync face too."""
    made = make_store(request.param, tmp_path)
    yield made
    await made.aclose()
    made.sync().close()


def _configurer(store: Store) -> Iterator[Configure]:
    overrides: list[override_settings] = []

    def configure(setting: dict[str, Any] | None = None, **sessionware: Any) -> None:
        """Give the project ``SESSIONWARE`` (the test's store and these
        options) and any other ``setting``."""
        override = override_settings(SESSIONWARE={"STORE": store, **sessionware},
                                     **(setting or {}))
        override.enable()
        overrides.append(override)

    configure()
    yield configure
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def configure(store: Store) -> Iterator[Configure]:
    yield from _configurer(store)


@pytest.fixture
def aconfigure(astore: Store) -> Iterator[Configure]:
    yield from _configurer(astore)
