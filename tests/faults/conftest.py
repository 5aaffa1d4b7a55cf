from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.targets import RedisTarget, SQLiteTarget, Target
from tests.servers.redis import RedisServer


@pytest.fixture(params=["sqlite", "redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Every store that has a process of its own to kill, stall or restart."""
    if request.param == "sqlite":
        return SQLiteTarget(tmp_path)
    factory: Callable[..., RedisServer] = request.getfixturevalue("redis_server_factory")
    return RedisTarget(factory(persistent=True))


@pytest.fixture(params=["redis"])
def server_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Every store with a server to restart (SQLite has none)."""
    factory: Callable[..., RedisServer] = request.getfixturevalue("redis_server_factory")
    return RedisTarget(factory(persistent=True))
