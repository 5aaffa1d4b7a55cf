from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sessionware.stores import SQLiteStore, Store
from tests.apps.counter import build_app
from tests.helpers import cookie_header, session_cookie
from tests.middleware_suite import MiddlewareSuite


class TestMiddlewareOnSQLite(MiddlewareSuite):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with SQLiteStore(tmp_path / "sessions.db") as store:
            yield store


@contextmanager
def database_locked(path: Path) -> Iterator[None]:
    """Another process's view: a connection holding SQLite's exclusive lock."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize(("options", "snapshot_status"), [
    # WAL readers pass a writer's lock: read mode keeps serving the snapshot
    pytest.param({"busy_timeout": 0.1}, 200, id="store-refuses"),
    # the store's one thread is stuck in the write's busy wait: reads queue behind it
    pytest.param({"busy_timeout": 30.0}, 503, id="store-too-slow"),
])
async def test_unavailable_store_gives_503_then_recovers_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, options: dict[str, float],
    snapshot_status: int,
) -> None:
    path = tmp_path / "sessions.db"
    async with SQLiteStore(path, **options) as store:
        app = build_app(store, store_timeout=0.5)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            cookie = session_cookie(await client.get("/inc"))
            assert cookie
            with caplog.at_level(logging.WARNING, logger="sessionware"), database_locked(path):
                response = await client.get("/inc", headers=cookie_header(cookie))
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                snapshot = await client.get("/n", headers=cookie_header(cookie))
                assert snapshot.status_code == snapshot_status
            failures = [r for r in caplog.records if r.name == "sessionware"]
            assert len(failures) == (1 if snapshot_status == 200 else 2)
            assert "StoreUnavailable" in failures[0].getMessage()
            response = await client.get("/inc?delay=0", headers=cookie_header(cookie),
                                        timeout=30)
            if response.status_code == 503:  # a timed-out acquire may still hold the lease
                pytest.fail(response.text)
            assert response.text == "2"
