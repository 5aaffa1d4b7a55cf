"""The middlewares on AzureTableStore (Azurite), on both faces: the shared
suite, round trips counted on the wire (every HTTP request the SDKs send is
logged by azure-core's logging policy, one record each), and the core promise
through two uvicorn workers and through gunicorn."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from sessionware.stores import AzureTableStore, Store
from tests.support.apps.served import serving
from tests.support.helpers import cookie_header, session_cookie
from tests.support.middleware_suite import MiddlewareSuite
from tests.support.processes import gunicorn, serve, uvicorn
from tests.support.store_contract import background_purge_done
from tests.web.asgi.test_end_to_end import APP, all_200_kept

TABLE, CONTAINER = "middlewaresessions", "middleware-sessions"


class TestMiddlewareOnAzure(MiddlewareSuite):
    @pytest.fixture
    def fresh_store(self, azure_connection_string: str) -> Store:
        return AzureTableStore(azure_connection_string, table=TABLE, container=CONTAINER)


class RequestCounter(logging.Handler):
    """Counts the HTTP requests azure-core sends (its logging policy logs
    each one's URL at INFO)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Request URL:"):
            self.requests.append(message.split("'")[1].split("?")[0])

    def take(self) -> list[str]:
        taken, self.requests = self.requests, []
        return taken


@pytest.fixture
def wire() -> Iterator[RequestCounter]:
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    counter, level = RequestCounter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


async def test_round_trips_on_the_wire(azure_connection_string: str, face: str,
                                       wire: RequestCounter) -> None:
    """A locked request whose acquire reuses this process's ETag costs 2
    requests (merge, replace); after another process's change, 3 (read,
    merge, replace); a read-mode request 1; no cookie, untouched, 0."""
    store = AzureTableStore(azure_connection_string, table=TABLE, container=CONTAINER,
                            purge_interval=3600)
    other = AzureTableStore(azure_connection_string, table=TABLE, container=CONTAINER,
                            purge_interval=3600)
    async with serving(store, face) as app, app.client(base_url="http://t") as client:
        cookie = session_cookie(await client.get("/inc?delay=0"))
        assert cookie
        await client.get("/inc?delay=0", headers=cookie_header(cookie))
        # the first purge's requests would otherwise join a count on a loaded machine
        await background_purge_done(store if face == "async" else store.sync())
        wire.take()  # the set-up and the first purge
        await client.get("/inc?delay=0", headers=cookie_header(cookie))
        assert len(wire.take()) == 2
        await client.get("/n", headers=cookie_header(cookie))
        assert len(wire.take()) == 1
        async with serving(other, face) as elsewhere, \
                elsewhere.client(base_url="http://t") as other_client:
            await other_client.get("/inc?delay=0", headers=cookie_header(cookie))
        wire.take()
        response = await client.get("/inc?delay=0", headers=cookie_header(cookie))
        assert response.text == "5"
        assert len(wire.take()) == 4  # a merge refused (412), the read, merge, replace
        client.cookies.clear()
        await client.get("/hello")
        assert wire.take() == []


def spec(connection_string: str) -> dict[str, str]:
    return {"SESSIONWARE_TEST_STORE": f"azure:{connection_string}"}


async def test_200_concurrent_increments_through_two_uvicorn_workers_end_at_200(
    azure_connection_string: str,
) -> None:
    with serve(uvicorn(APP, workers=2), spec(azure_connection_string)) as server:
        for _ in range(2):
            await all_200_kept(server.url)


async def test_200_concurrent_increments_through_gunicorn_end_at_200(
    azure_connection_string: str,
) -> None:
    """The Flask app on the sync face, gunicorn --preload with 2 gthread
    workers x 8 threads: each worker opens its own clients after the fork."""
    command = gunicorn("tests.support.apps.flask_counter:app_from_env()",
                       "-w", "2", "-k", "gthread",
                       "--threads", "8", "--preload")
    with serve(command, spec(azure_connection_string)) as server:
        await all_200_kept(server.url)
