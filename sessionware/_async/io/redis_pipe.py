"""RedisStore's lean path, async face: one auto-pipelined connection per process.

Commands issued in one event-loop turn leave in one write; ``data_received``
hands the replies, parsed by hiredis, to the callers' futures in order. A caller
that is cancelled or times out only abandons its future: its reply is read and
dropped, so the stream stays in step. Error replies raise what redis-py's own
parser makes of them (:func:`~sessionware.stores._redis_protocol.reply_error`).
Why, and what it saves: "The lean command path" in docs/stores/redis.md.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast

import hiredis
from redis import exceptions as rexc

from sessionware._async.io.shared_connection import SharedConnection
from sessionware.stores._redis_protocol import handshake, reply_error

__all__ = ["LeanPath"]


class _Connection(asyncio.Protocol):
    """One connection of the lean path. Replies resolve the pending futures
    straight from ``data_received`` (no reader task, no extra loop turn);
    commands gather in a buffer flushed once per loop turn."""

    def __init__(self, timeout: float | None) -> None:
        self.loop = asyncio.get_running_loop()
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
        reply = self.loop.create_future()
        if self.broken is not None:
            reply.set_exception(self.broken)
            return reply
        if not self._buffer:
            self.loop.call_soon(self._flush)
        self._buffer.append(packed)
        self._pending.append((reply, self.loop.time()))
        if self._watchdog is None and self._timeout is not None:
            self._watchdog = self.loop.call_later(self._timeout, self._check_overdue)
        return reply

    def _check_overdue(self) -> None:
        """One timer while commands are in flight, not one per command: the
        oldest unanswered command decides, abandoned ones included (the server
        owes their replies all the same)."""
        self._watchdog = None
        if not self._pending or self._timeout is None:
            return
        overdue_in = self._pending[0][1] + self._timeout - self.loop.time()
        if overdue_in <= 0:
            self.fail(rexc.TimeoutError("Redis did not answer in time"))
        else:
            self._watchdog = self.loop.call_later(overdue_in, self._check_overdue)

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
            future.set_exception(reply_error(str(reply)))
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


class LeanPath(SharedConnection[_Connection]):
    """Commands to one server over one shared, auto-pipelined connection,
    reconnected after a failure (or in a forked child, or on another loop)."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = None) -> None:
        super().__init__()
        self._address = (host, port)
        self._hello = handshake(db, username, password)
        self._timeout = timeout

    async def execute(self, packed: bytes) -> Any:
        """Send one packed command and return its reply; the connection's
        watchdog bounds the wait by the socket timeout, the core's deadline by
        cancelling the caller."""
        connection = self._connection
        if connection is None or connection.broken is not None or not self._owned(connection):
            connection = await self._connect()
        return await connection.send(packed)

    async def _open(self) -> _Connection:
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                _, connection = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self._timeout), *self._address)
                for command in self._hello:
                    await connection.send(command)
        except BaseException as exc:
            if connection is not None:
                connection.fail(rexc.ConnectionError("the handshake failed"))
            if isinstance(exc, TimeoutError):
                raise rexc.TimeoutError(f"connecting to Redis at {self._address}") from exc
            if isinstance(exc, OSError):
                raise rexc.ConnectionError(
                    f"connecting to Redis at {self._address}: {exc}") from exc
            raise
        return connection

    def _closed(self) -> BaseException:
        return rexc.ConnectionError("the store was closed")
