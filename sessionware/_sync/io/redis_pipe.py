"""RedisStore's lean path, sync face: a blocking connection per thread.

Hand-written, not generated: the counterpart of :mod:`sessionware._async.io.redis_pipe`,
with the same :class:`LeanPath`, so the one source of the store needs no branch for it.
A thread's connection opens at its first command and closes when the thread ends
(:class:`~sessionware._perthread.PerThread`), after any error and at :meth:`LeanPath.close`;
each call bounds its wait by what is left of the store call
(:func:`~sessionware._sync.io.primitives.time_left`) and by the socket timeout, whichever
is sooner. Why: "The lean command path" in docs/stores/redis.md.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import hiredis
from redis import exceptions as rexc

from sessionware._perthread import PerThread
from sessionware._sync.io.primitives import time_left
from sessionware.stores._redis_protocol import handshake, reply_error

__all__ = ["LeanPath"]

_TIMEOUT_STEP = 0.05
"""A blocking call's bound, rounded down to this step, is given to the kernel
only when it changes: not a system call per command."""

_IDLE_CHECK = 0.01
"""A connection idle this long is checked before it is used (one
non-blocking peek): the server may have closed it meanwhile (a restart, its
``timeout``), and a command sent into it would fail a request the server,
back by now, could serve. A busy thread's connection is never idle so long."""


class LeanPath:
    """Commands to one server, each over the calling thread's own blocking
    connection."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = None) -> None:
        self._address = (host, port)
        self._hello = handshake(db, username, password)
        self._timeout = timeout
        self._connections: PerThread[_Connection] = PerThread(_Connection.close)

    def execute(self, packed: bytes) -> Any:
        """Send one packed command and return its reply, within what is left of
        the store call and the socket timeout."""
        timeout = self._bound()
        def opened() -> _Connection:
            return _Connection.open(self._address, self._hello, timeout)

        connection = self._connections.get(opened)
        if connection.closed_by_server():
            self._connections.discard()  # as redis-py's pool does at checkout
            connection = self._connections.get(opened)
        try:
            reply = connection.call(packed, timeout)
        except BaseException:
            self._connections.discard()
            raise
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(str(reply))
        return reply

    def _bound(self) -> float | None:
        left = time_left()
        if left is None:
            return self._timeout
        if left <= 0:
            raise rexc.TimeoutError("no time left for the store call")
        return left if self._timeout is None else min(left, self._timeout)

    def close(self) -> None:
        self._connections.close_all()


class _Connection:
    """One blocking connection of the lean path (of one thread)."""

    __slots__ = ("_steps", "_used", "parser", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = hiredis.Reader()
        self._steps = 0  # the kernel timeout now set, in _TIMEOUT_STEPs (0: none)
        self._used = time.monotonic()

    def closed_by_server(self) -> bool:
        """Whether the server closed this connection (or sent what nobody
        asked for) while it was idle, checked only after :data:`_IDLE_CHECK`."""
        now = time.monotonic()
        idle, self._used = now - self._used, now
        if idle < _IDLE_CHECK:
            return False
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing to read: open and in step
        except OSError:
            return True
        return True  # end of stream, or bytes no command is waiting for

    @classmethod
    def open(cls, address: tuple[str, int], hello: list[bytes],
             timeout: float | None) -> _Connection:
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
                    raise reply_error(str(reply))
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
