"""The test project's views: a counter, its failures, auth, messages, CSRF."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

from django.contrib import messages
from django.contrib.auth import aauthenticate, alogin, authenticate, login, logout
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.views import View

from sessionware import SessionClosed, SessionNotLoaded
from sessionware.django import UsesSessionMixin, uses_session


def _delay(request: HttpRequest) -> float:
    return float(request.GET.get("delay", "0.005"))


def inc(request: HttpRequest) -> HttpResponse:
    n = request.session.get("n", 0)
    time.sleep(_delay(request))  # some work between the read and the write
    request.session["n"] = n + 1
    return HttpResponse(str(n + 1))


async def ainc(request: HttpRequest) -> HttpResponse:
    n = await request.session.aget("n", 0)
    await asyncio.sleep(_delay(request))
    await request.session.aset("n", n + 1)
    return HttpResponse(str(n + 1))


def read_n(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n", 0)))


async def aread_n(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(await request.session.aget("n", 0)))


@uses_session("read")
def read_only(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("n", 0)))


@uses_session("read")
def read_write(request: HttpRequest) -> HttpResponse:
    try:
        request.session["n"] = -1
    except SessionClosed:
        return HttpResponse("refused")
    return HttpResponse("written")


@uses_session("none")
def no_session(request: HttpRequest) -> HttpResponse:
    seen = request.session.get("n", "nothing")
    try:
        request.session["n"] = -1
    except SessionNotLoaded:
        return HttpResponse(f"{seen}, refused")
    return HttpResponse("written")


def boom(request: HttpRequest) -> HttpResponse:
    request.session["n"] = 999
    raise RuntimeError("the view failed after changing the session")


def server_error(request: HttpRequest) -> HttpResponse:
    request.session["n"] = 999
    return HttpResponse("down", status=503)


def forbidden(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return HttpResponse("no", status=403)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1

    def body() -> Iterator[bytes]:
        yield b"streamed "
        try:
            request.session["n"] = -1
        except SessionClosed:
            yield b"after the commit"
        else:
            yield b"before the commit"

    return StreamingHttpResponse(body())


def hold(request: HttpRequest) -> HttpResponse:
    """Hold the session's lock until the file ``<dir>/release`` exists (at
    most 10 s), after saying so with ``<dir>/held``."""
    where = Path(request.GET["dir"])
    n = request.session.get("n", 0)
    (where / "held").touch()
    deadline = time.monotonic() + 10
    while not (where / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    request.session["n"] = n + 1
    return HttpResponse(str(n + 1))


def cycle(request: HttpRequest) -> HttpResponse:
    before = request.session.session_key
    request.session.cycle_key()
    return HttpResponse(f"{before} {request.session.session_key}")


async def acycle(request: HttpRequest) -> HttpResponse:
    await request.session.acycle_key()
    return HttpResponse(str(await request.session.aget("n", 0)))


def flush(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("flushed")


async def aflush(request: HttpRequest) -> HttpResponse:
    await request.session.aflush()
    return HttpResponse("flushed")


def key(request: HttpRequest) -> HttpResponse:
    request.session.get("n")
    return HttpResponse(str(request.session.session_key))


def log_in(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username=request.POST["username"],
                        password=request.POST["password"])
    if user is None:
        return HttpResponse("wrong", status=401)
    login(request, user)
    return HttpResponse(f"hello {user.get_username()}")


async def alog_in(request: HttpRequest) -> HttpResponse:
    user = await aauthenticate(request, username=request.POST["username"],
                               password=request.POST["password"])
    if user is None:
        return HttpResponse("wrong", status=401)
    await alogin(request, user)
    return HttpResponse(f"hello {user.get_username()}")


def log_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("bye")


def whoami(request: HttpRequest) -> HttpResponse:
    user = request.user
    return HttpResponse(user.get_username() if user.is_authenticated else "anonymous")


def message(request: HttpRequest) -> HttpResponse:
    messages.info(request, request.GET.get("text", "hello"))
    return HttpResponse("queued")


def show_messages(request: HttpRequest) -> HttpResponse:
    return HttpResponse("|".join(str(m) for m in messages.get_messages(request)))


def csrf(request: HttpRequest) -> HttpResponse:
    return HttpResponse(get_token(request))


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"posted {request.POST.get('value', '')}")


def remember(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    request.session.set_expiry(0 if request.GET.get("forget") else 3600)
    request.session["remembered"] = True
    return HttpResponse("ok")


class ClassRead(UsesSessionMixin, View):
    session_mode = "read"

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            request.session["n"] = request.session.get("n", 0) + 1
        except SessionClosed:
            return HttpResponse("read-only")
        return HttpResponse("written")
