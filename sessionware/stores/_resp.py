"""A lean, auto-pipelined RESP2 command path for RedisStore's hot operations.

Every locked request runs two scripts (acquire, commit), so the cost of one
command is paid twice per request. Two costs dominate with redis-py's general
client: its Python per command (pool checkout with its own timeouts, argument
encoding, observability hooks, retry wrappers: about 70 µs here), and one
``send`` system call per command, each waking the server on its own.

This path removes both. All commands of one process share one connection:
each is appended to a write buffer that is flushed once per event-loop turn
(commands issued by concurrent requests in the same turn leave in one system
call), and the protocol's ``data_received`` hands replies, in order, to the
callers' futures (hiredis parses them). A caller that is cancelled or times out just abandons
its future; its reply is read and dropped, so the stream stays in step.

Where blocking is harmless (:func:`sessionware._loop.may_block`: the WSGI
driver's loop, run by a request thread that waits for the reply anyway), a
command instead goes over a plain blocking socket of the calling thread's
own: send, receive, done, with no loop turn and no thread wake-up besides the
reply's. The caller's coroutine then runs to its end without suspending.

Errors are redis-py's own exception classes (parsed by redis-py's error
parser), so :func:`sessionware.stores.redis._translated` stays the one place
where Redis errors become sessionware's. RedisStore uses this path only where
it is equivalent to redis-py: a single server over TCP, with hiredis installed.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis import exceptions as rexc
from redis._parsers.base import BaseParser

from sessionware import _loop, deadlines
from sessionware._forks import generation
from sessionware._perthread import PerThread

__all__ = ["RespPipe", "evalsha_command", "pack"]

Arg = bytes | str | int


def pack(*args: Arg) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(args), _bulk(args))


def _bulk(args: Sequence[Arg]) -> bytes:
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def evalsha_command(sha: str, key: str, args: Sequence[Arg]) -> bytes:
    """``EVALSHA sha 1 key args...``; the fixed head is formatted in one step."""
    head = _EVALSHA_HEAD % (4 + len(args), sha.encode(), len(key), key.encode())
    return head + _bulk(args)


_EVALSHA_HEAD = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n$%d\r\n%b\r\n"


class _Stream(asyncio.Protocol):
    """One connection. Replies resolve the pending futures, in the order the
    commands went out, straight from ``data_received``: no reader task, no
    extra loop turn. Commands gather in a buffer flushed once per loop turn:
    under load the commands of many requests leave in one system call (writing
    at once when idle was measured too: more system calls under load, for one
    loop turn less latency)."""

    def __init__(self, timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._parser = hiredis.Reader()
        self._buffer: list[bytes] = []
        # each command's future and when it went out, oldest first
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = (
            collections.deque())
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass
        # asyncio.Transport, though they are one in every way this uses
        self._transport = cast(asyncio.Transport, transport)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        reply = self._loop.create_future()
        if self.broken is not None:
            reply.set_exception(self.broken)
            return reply
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(packed)
        self._pending.append((reply, self._loop.time()))
        if self._watchdog is None and self._timeout is not None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_overdue)
        return reply

    def _check_overdue(self) -> None:
        """One timer while commands are in flight, not one per command: the
        oldest unanswered command decides, abandoned ones included (the server
        owes their replies all the same)."""
        self._watchdog = None
        if not self._pending or self._timeout is None:
            return
        overdue_in = self._pending[0][1] + self._timeout - self._loop.time()
        if overdue_in <= 0:
            self.fail(rexc.TimeoutError("Redis did not answer in time"))
        else:
            self._watchdog = self._loop.call_later(overdue_in, self._check_overdue)

    def _flush(self) -> None:
        if self._buffer and self.broken is None and self._transport is not None:
            self._transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not False:
                self._resolve(self._pending.popleft()[0], reply)
        except Exception as exc:  # a malformed stream, or a reply nobody asked for
            self.fail(rexc.ConnectionError(f"Redis connection failed: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rexc.ConnectionError(f"Redis closed the connection: {exc!r}"))

    @staticmethod
    def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
        if future.done():
            return  # its caller gave up: the reply is dropped
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
        else:
            future.set_result(reply)

    def fail(self, error: BaseException) -> None:
        """Close the connection and fail every command still waiting on it."""
        if self.broken is None:
            self.broken = error
            if self._transport is not None:
                self._transport.close()
            if self._watchdog is not None:
                self._watchdog.cancel()
        while self._pending:
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: an abandoned future must not warn


class RespPipe:
    """Commands to one server over one shared, auto-pipelined connection,
    reconnected after a failure (or in a forked child, or on another loop)."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = None) -> None:
        self._address = (host, port)
        self._hello = _handshake(db, username, password)
        self._timeout = timeout
        self._stream: _Stream | None = None
        self._connecting: asyncio.Task[_Stream] | None = None
        self._generation = generation()
        self._blocking = _BlockingConnections(self._address, self._hello, timeout)

    async def execute(self, packed: bytes) -> Any:
        """Send one packed command and return its reply."""
        if _loop.may_block():
            return self._blocking.execute(packed, deadlines.remaining())
        stream = self._stream
        if stream is None or stream.broken or not self._owned(stream):
            stream = await self._connect()
        return await stream.send(packed)  # the stream's watchdog bounds the wait

    def _owned(self, stream: _Stream) -> bool:
        if self._generation != generation():  # forked: the socket is the parent's
            self._generation, self._stream = generation(), None
            return False
        return stream._loop is asyncio.get_running_loop()

    async def _connect(self) -> _Stream:
        """One connection attempt shared by every caller that needs it now."""
        task = self._connecting
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._connecting = asyncio.ensure_future(self._open())
        self._stream = await asyncio.shield(task)
        return self._stream

    async def _open(self) -> _Stream:
        stream: _Stream | None = None
        try:
            async with asyncio.timeout(self._timeout):
                _, stream = await asyncio.get_running_loop().create_connection(
                    lambda: _Stream(self._timeout), *self._address)
                for command in self._hello:
                    await stream.send(command)
        except BaseException as exc:
            if stream is not None:
                stream.fail(rexc.ConnectionError("the handshake failed"))
            if isinstance(exc, TimeoutError):
                raise rexc.TimeoutError(f"connecting to Redis at {self._address}") from exc
            if isinstance(exc, OSError):
                raise rexc.ConnectionError(
                    f"connecting to Redis at {self._address}: {exc}") from exc
            raise
        return stream

    def close(self) -> None:
        self._blocking.close()
        stream, self._stream = self._stream, None
        if stream is not None and stream._loop is asyncio.get_running_loop():
            stream.fail(rexc.ConnectionError("the store was closed"))


class _BlockingConnections:
    """A blocking connection per calling thread, opened on first use, closed
    when the thread ends and after any error (a reply may be left unread:
    out of step)."""

    def __init__(self, address: tuple[str, int], hello: list[bytes],
                 timeout: float | None) -> None:
        self._address = address
        self._hello = hello
        self._timeout = timeout
        self._connections: PerThread[_BlockingConnection] = PerThread(_BlockingConnection.close)

    def execute(self, packed: bytes, time_left: float | None) -> Any:
        """The reply to one command, within ``time_left`` (the caller's store
        deadline) and the store's socket timeout."""
        timeout = self._timeout if time_left is None else (
            time_left if self._timeout is None else min(time_left, self._timeout))
        connection = self._connections.get(
            lambda: _BlockingConnection.open(self._address, self._hello, timeout))
        try:
            reply = connection.call(packed, timeout)
        except BaseException:
            self._connections.discard()
            raise
        if isinstance(reply, hiredis.ReplyError):
            raise BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
        return reply

    def close(self) -> None:
        self._connections.close_all()


_TIMEOUT_STEP = 0.05
"""A blocking call's bound, rounded down to this step, is given to the kernel
only when it changes: not a system call per command."""


class _BlockingConnection:
    __slots__ = ("_steps", "parser", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = hiredis.Reader()
        self._steps = 0  # the kernel timeout now set, in _TIMEOUT_STEPs (0: none)

    @classmethod
    def open(cls, address: tuple[str, int], hello: list[bytes],
             timeout: float | None) -> _BlockingConnection:
        try:
            sock = socket.create_connection(address, timeout)
        except TimeoutError as exc:
            raise rexc.TimeoutError(f"connecting to Redis at {address}") from exc
        except OSError as exc:
            raise rexc.ConnectionError(f"connecting to Redis at {address}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)  # blocking; bounded by kernel timeouts (_bound)
        connection = cls(sock)
        try:
            for command in hello:
                reply = connection.call(command, timeout)
                if isinstance(reply, hiredis.ReplyError):
                    raise BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
        except BaseException:
            connection.close()
            raise
        return connection

    def call(self, packed: bytes, timeout: float | None) -> Any:
        """Send one command and read its reply (redis-py's errors on failure)."""
        try:
            self._bound(timeout)
            self.sock.sendall(packed)
            while (reply := self.parser.gets()) is False:
                data = self.sock.recv(65536)
                if not data:
                    raise rexc.ConnectionError("Redis closed the connection")
                self.parser.feed(data)
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: SO_RCVTIMEO ran out
            raise rexc.TimeoutError("Redis did not answer in time") from exc
        except OSError as exc:
            raise rexc.ConnectionError(f"Redis connection failed: {exc!r}") from exc
        return reply

    def _bound(self, timeout: float | None) -> None:
        """Bound each send and receive by ``timeout`` with the kernel's
        SO_SNDTIMEO and SO_RCVTIMEO, not a Python socket timeout: that one
        costs a poll() before every send and receive, and two fcntl()s per
        change. Rounded down (at least one step), so never later than asked."""
        steps = 0 if timeout is None else max(1, int(timeout / _TIMEOUT_STEP))
        if steps != self._steps:
            seconds = steps * _TIMEOUT_STEP
            # struct timeval; "ll" also fits macOS's int tv_usec (little-endian, padded)
            timeval = struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            self._steps = steps

    def close(self) -> None:
        self.sock.close()


def _handshake(db: int, username: str | None, password: str | None) -> list[bytes]:
    commands = []
    if password is not None:
        commands.append(pack("AUTH", *([username] if username else []), password))
    if db:
        commands.append(pack("SELECT", db))
    return commands
