"""The public surface: complete, sorted, documented, and light to import."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import pytest
from mypy import api as mypy_api

import sessionware
import sessionware.stores
from sessionware import (
    LockTimeout,
    SessionConfig,
    SessionMiddleware,
    SessionOptions,
    WSGISessionMiddleware,
)
from sessionware._sync.core import SyncSessionCore
from sessionware.cookies import new_session_id, store_key
from sessionware.flask import Sessionware
from sessionware.stores import Lease, Locked, SyncMemoryStore


@pytest.mark.parametrize("module", [sessionware, sessionware.stores])
def test_all_is_sorted_and_complete(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("name", [n for n in sessionware.__all__ if not n.startswith("_")])
def test_public_names_are_documented(name: str) -> None:
    obj = getattr(sessionware, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_optional_drivers_are_not_imported_by_the_package() -> None:
    code = ("import sys, sessionware, sessionware.stores; "
            "print(sorted(m for m in ('redis', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- one set of options, visible in every middleware's signature ---------------------

MIDDLEWARES: list[Callable[..., Any]] = [
    SessionMiddleware.__init__, WSGISessionMiddleware.__init__, Sessionware.__init__,
    Sessionware.init_app,
]


@pytest.mark.parametrize("init", MIDDLEWARES, ids=lambda f: f.__qualname__)
def test_every_middleware_takes_the_options_typed_in_its_signature(
        init: Callable[..., Any]) -> None:
    """``**options: Unpack[SessionOptions]`` after ``store`` and ``secret_key``:
    what an editor completes and a type checker checks."""
    parameters = inspect.signature(init).parameters
    assert list(parameters) == ["self", "app", "store", "secret_key", "options"]
    assert parameters["store"].kind is parameters["secret_key"].kind is (
        inspect.Parameter.KEYWORD_ONLY)
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    assert typing.get_type_hints(init)["options"] == Unpack[SessionOptions]


TYPED_CALLS = """
    from typing import Any

    from fastapi import FastAPI
    from flask import Flask

    from sessionware import SessionMiddleware, WSGISessionMiddleware, default_error_response
    from sessionware.flask import Sessionware
    from sessionware.stores import MemoryStore


    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...


    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []


    KEY = "k" * 32
    SessionMiddleware(asgi, store=MemoryStore(), secret_key=KEY, lock_timout=5)  # line 19
    WSGISessionMiddleware(wsgi, store=MemoryStore(), secret_key=KEY, idle_timeout="20m")
    Sessionware(Flask(__name__), store=MemoryStore(), lock_mode=42)
    Sessionware().init_app(Flask(__name__), max_waiting=2.5)
    FastAPI().add_middleware(SessionMiddleware, store=MemoryStore(), secret_key=KEY, max_size=1.5)
    SessionMiddleware(asgi, store=MemoryStore(), secret_key=KEY, idle_timeout=60,
                      lock_mode="lazy", refresh_after=None, on_error=default_error_response)
"""


def test_a_type_checker_checks_each_middlewares_options(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A misspelt option, or one of the wrong type, is a type error in every
    middleware (Starlette's add_middleware passes the signature on)."""
    source = tmp_path / "typed.py"
    source.write_text(textwrap.dedent(TYPED_CALLS).lstrip())
    # pytest's cache, when its plugin is on (-p no:cacheprovider has no .cache)
    cached = getattr(request.config, "cache", None)
    cache = cached.mkdir("mypy") if cached is not None else tmp_path
    out, _, _ = mypy_api.run(["--strict", "--cache-dir", str(cache), "--no-error-summary",
                              "--hide-error-context", str(source)])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [19, 20, 21, 22, 23], out
    assert 'Unexpected keyword argument "lock_timout"' in errors[0]
    assert all('Argument "' in line for line in errors[1:]), out


# -- one store API, two faces ---------------------------------------------------------

class PublicTypesStore(SyncMemoryStore):
    """A sync store written against the public API, as a third-party store
    would be: ``from sessionware.stores import Lease, Locked, SyncStore``."""

    def acquire(self, key: str, *, lease_ttl: float) -> Any:
        got = super().acquire(key, lease_ttl=lease_ttl)
        if got is None:
            return None
        if hasattr(got, "retry_after"):
            return Locked(got.retry_after)
        return Lease(got.key, got.token, got.data)


def test_a_sync_store_answering_with_the_public_locked_is_waited_for() -> None:
    """The sync core tells a refusal from a lease by its class: the ``Locked``
    a sync store can import must be the one the sync core knows."""
    store = PublicTypesStore()
    key = store_key(new_session_id())
    assert store.create(key, b"{}", ttl=60)
    assert isinstance(store.acquire(key, lease_ttl=60), Lease)  # someone holds it
    core = SyncSessionCore(store, "k" * 32, config=SessionConfig(lock_timeout=0.2))
    with pytest.raises(LockTimeout):
        core.lock(key)


def test_both_faces_share_the_lease_types() -> None:
    from sessionware._sync.stores import base as sync_base

    assert sync_base.Lease is sessionware.stores.Lease
    assert sync_base.Locked is sessionware.stores.Locked
