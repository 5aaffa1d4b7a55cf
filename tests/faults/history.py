"""The history check of the fault suite, and the app it runs against.

Each request of the traffic appends its own id to a list in the session
(``/add?id=...``), so every answer is checked against the stored list
(:func:`check_outcomes`):

* 200: the id is stored, exactly once;
* 503 (busy, store unavailable) and 409 (lease lost): the id is absent;
* 500 "did not confirm" (OutcomeUnknown): present at most once;
* nothing else is answered, and no id is stored that was not sent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from sessionware.stores import Store
from tests.support.apps.served import Served, build
from tests.support.faces import sync_face
from tests.support.helpers import CountingStore, SyncCountingStore, cookie_header, session_cookie
from tests.support.processes import gunicorn, uvicorn

Counting = CountingStore | SyncCountingStore

UNCONFIRMED = "did not confirm"  # the body of OutcomeUnknown's 500


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll a condition the test waits for, within a bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


def server(face: str) -> list[str]:
    """The command of a server process of the counter app on ``face``."""
    if face == "async":
        return uvicorn("tests.support.apps.counter:app_from_env")
    return gunicorn("tests.support.apps.wsgi_counter:app_from_env()",
                    "-k", "gthread", "--threads", "4")


@asynccontextmanager
async def in_process(store: Store, face: str, **options: object
                     ) -> AsyncIterator[tuple[Served, httpx.AsyncClient, Counting, str]]:
    """The app in this process over ``store`` on ``face``, the store set up
    and connected first (as the startup check does in a server), so that a
    short ``store_timeout`` bounds the operations under test and not the
    making of a driver's client; a session exists."""
    if face == "async":
        await store.setup()
        counting: Counting = CountingStore(store)
    else:
        faced = sync_face(store)
        await asyncio.to_thread(faced.setup)
        counting = SyncCountingStore(faced)
    app = build(counting, **options)
    try:
        async with app.client(base_url="http://t", timeout=60) as client:
            cookie = session_cookie(await client.get("/add?id=first"))
            assert cookie
            yield app, client, counting, cookie
    finally:
        app.release()
        if isinstance(counting, CountingStore):
            await counting.aclose()
        else:
            await asyncio.to_thread(counting.close)


async def stored_ids(client: httpx.AsyncClient, cookie: str, base: str = "") -> list[str]:
    response = await client.get(f"{base}/snapshot/ids", headers=cookie_header(cookie))
    assert response.status_code == 200, response.text
    return response.text.split()


class Traffic:
    """``clients`` clients adding ids to one session until the block ends;
    every answer kept by its request's id, in the order they came. With
    ``others`` (clients of other app servers), the clients take turns among
    ``client`` and them."""

    def __init__(self, client: httpx.AsyncClient, cookie: str, clients: int = 4,
                 others: tuple[httpx.AsyncClient, ...] = ()) -> None:
        self.servers, self.cookie, self.clients = (client, *others), cookie, clients
        self.answers: dict[str, httpx.Response] = {}
        self.took: dict[str, float] = {}  # seconds, by request id
        self._ids = (f"r{n}" for n in itertools.count())
        self._stop = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def count(self, status: int, since: int = 0) -> int:
        return sum(r.status_code == status for r in list(self.answers.values())[since:])

    def statuses(self) -> Counter[int]:
        """How many answers of each status: the numbers docs/failures.md publishes."""
        return Counter(r.status_code for r in self.answers.values())

    def report(self, what: str) -> None:
        """Print what the clients saw (``pytest -s``): docs/failures.md publishes it."""
        statuses = dict(sorted(self.statuses().items()))
        print(f"\n{what}: {statuses}, slowest answer {max(self.took.values()):.2f} s")

    async def _run(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            request_id = next(self._ids)
            sent = time.monotonic()
            answer = await client.get(
                f"/add?id={request_id}&delay=0.002", headers=cookie_header(self.cookie))
            self.took[request_id] = time.monotonic() - sent
            self.answers[request_id] = answer

    async def __aenter__(self) -> Traffic:
        self._workers = [asyncio.create_task(self._run(self.servers[n % len(self.servers)]))
                         for n in range(self.clients)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)


def check_outcomes(answers: dict[str, httpx.Response], stored: list[str]) -> None:
    assert stored[0] == "first" and len(stored) == len(set(stored)), stored
    unexpected = set(stored) - set(answers) - {"first"}
    assert not unexpected, unexpected
    for request_id, response in answers.items():
        status, body = response.status_code, response.text
        if status == 200:
            assert request_id in stored, f"{request_id} answered 200 but was not stored"
        elif status in (409, 503):
            assert request_id not in stored, f"{request_id} answered {status}: {body}"
        else:
            assert (status, UNCONFIRMED in body) == (500, True), (request_id, status, body)
