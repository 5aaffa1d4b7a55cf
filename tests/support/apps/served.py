"""The counter app in this process, on either face, behind one interface, so
that a suite's test body is written once:

* :class:`ServedASGI`: tests/support/apps/counter.py (Starlette) behind the ASGI
  middleware, over a store's async face, reached through httpx's ASGI transport;
* :class:`ServedWSGI`: tests/support/apps/wsgi_counter.py behind the WSGI middleware,
  over the store's sync face, reached through :class:`ThreadPerRequest`, an
  in-process WSGI server that runs each request on a thread of its own, as
  werkzeug's development server (``flask run``) does.

Either way the client is an ``httpx.AsyncClient``: ``asyncio.gather`` of its
requests is real concurrency, tasks on the loop on one face and request threads
on the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Protocol
from wsgiref.types import WSGIApplication, WSGIEnvironment

import httpx
from starlette.applications import Starlette

from sessionware.stores import Store, SyncStore
from sessionware.wsgi import WSGISessionMiddleware
from tests.support.apps import counter, wsgi_counter
from tests.support.apps.wsgi_counter import CounterApp
from tests.support.faces import sync_face

HOLD_WAIT = 5.0  # bound on a test's wait for a handler to hold its lock


class Served(Protocol):
    """The counter app as a suite drives it, on either face."""

    @property
    def core(self) -> Any: ...

    def client(self, base_url: str = "http://testserver", raise_app_exceptions: bool = True,
               timeout: float = 10) -> httpx.AsyncClient: ...

    async def holding(self) -> None:
        """Until a handler (``/hold``, ``/early``, ...) holds its session's lock."""

    def release(self) -> None:
        """Let every held handler go on."""


class ServedASGI:
    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def core(self) -> Any:
        stack = self.app.middleware_stack  # built by the first request
        while not hasattr(stack, "core"):
            stack = stack.app
        return stack.core

    def client(self, base_url: str = "http://testserver", raise_app_exceptions: bool = True,
               timeout: float = 10) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=raise_app_exceptions)
        return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout)

    async def holding(self) -> None:
        await asyncio.wait_for(self.app.state.holding.wait(), HOLD_WAIT)

    def release(self) -> None:
        self.app.state.release.set()


class ServedWSGI:
    def __init__(self, middleware: WSGISessionMiddleware) -> None:
        self.middleware = middleware
        assert isinstance(middleware.app, CounterApp)
        self.app: CounterApp = middleware.app

    @property
    def core(self) -> Any:
        return self.middleware.core

    def client(self, base_url: str = "http://testserver", raise_app_exceptions: bool = True,
               timeout: float = 10) -> httpx.AsyncClient:
        transport = ThreadPerRequest(self.middleware, raise_app_exceptions=raise_app_exceptions)
        return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout)

    async def holding(self) -> None:
        held = await asyncio.to_thread(self.app.holding.wait, HOLD_WAIT)
        assert held, "no handler took the session's lock"

    def release(self) -> None:
        self.app.release.set()


def build(store: Store | SyncStore, **options: Any) -> Served:
    """The counter app over ``store``: ASGI over an async store, WSGI over a sync one."""
    if isinstance(store, Store):
        return ServedASGI(counter.build_app(store, **options))
    return ServedWSGI(wsgi_counter.build_app(store, **options))


@asynccontextmanager
async def serving(store: Store, face: str, **options: Any) -> AsyncIterator[Served]:
    """The counter app over ``store`` on ``face`` (its sync twin on the sync
    face); the store is closed and every held handler let go at the end."""
    faced: Store | SyncStore = store if face == "async" else sync_face(store)
    served = build(faced, **options)
    try:
        yield served
    finally:
        served.release()
        if isinstance(faced, Store):
            await faced.aclose()
        else:
            await asyncio.to_thread(faced.close)


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class ThreadPerRequest(httpx.AsyncBaseTransport):
    """An in-process WSGI server for an ``httpx.AsyncClient``: each request is
    served on a new thread, which calls the app, reads the whole body and
    closes it, as a server does (a generator app's ``start_response`` may come
    at its first step). An exception that escapes the app is raised in the
    test (``raise_app_exceptions``) or answered 500, as a server would."""

    def __init__(self, app: WSGIApplication, *, raise_app_exceptions: bool = True) -> None:
        self.app = app
        self.raise_app_exceptions = raise_app_exceptions

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        answer: concurrent.futures.Future[Answer] = concurrent.futures.Future()
        thread = threading.Thread(target=self._serve, args=(request, content, answer),
                                  name="wsgi-request", daemon=True)
        thread.start()
        status, headers, body = await asyncio.wrap_future(answer)
        return httpx.Response(status, headers=headers, content=body)

    def _serve(self, request: httpx.Request, content: bytes,
               answer: concurrent.futures.Future[Answer]) -> None:
        if not answer.set_running_or_notify_cancel():
            return  # the client gave up before the server took the request
        try:
            answer.set_result(self._call(request, content))
        except BaseException as exc:  # handed to the awaiting test
            if self.raise_app_exceptions:
                answer.set_exception(exc)
            else:
                answer.set_result((500, [], b"Internal Server Error"))

    def _call(self, request: httpx.Request, content: bytes) -> Answer:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: tuple[type[BaseException], BaseException,
                                           TracebackType] | None = None) -> Any:
            if exc_info is not None and sent:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [(status, headers)]
            return chunks.append

        chunks: list[bytes] = []
        sent = False
        body: Iterable[bytes] = self.app(environ_of(request, content), start_response)
        try:
            for chunk in body:
                if chunk:
                    sent = True  # the headers leave with the first bytes of the body
                chunks.append(chunk)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        assert started, "the app never called start_response"
        status, headers = started[0]
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return int(status.split(" ", 1)[0]), raw, b"".join(chunks)


def environ_of(request: httpx.Request, content: bytes) -> WSGIEnvironment:
    """The environ a WSGI server makes of ``request`` (PEP 3333: header values
    are bytes as latin-1, so any byte a client sends arrives)."""
    url = request.url
    environ: WSGIEnvironment = {
        "wsgi.version": (1, 0), "wsgi.url_scheme": url.scheme,
        "wsgi.input": io.BytesIO(content), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "REQUEST_METHOD": request.method, "SCRIPT_NAME": "",
        "PATH_INFO": url.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": url.query.decode("latin-1"),
        "SERVER_NAME": url.host, "SERVER_PORT": str(url.port or {"https": 443}.get(url.scheme, 80)),
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
    }
    for key, value in request.headers.raw:
        name = key.decode("latin-1").upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        environ[name] = value.decode("latin-1")
    return environ
