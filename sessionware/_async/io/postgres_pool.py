"""PostgresStore's pooled connections, async face: a lender in front of
psycopg_pool. The pool opens the connections (at most ``limit``), reconnects in
the background and discards the broken ones handed back; the lender keeps those
it checked out idle between operations, out of the pool, and lends each to one
operation at a time: psycopg_pool's own checkout and return (an asyncio timeout,
locks and a condition, a state check and reset) cost about a fifth of the
throughput with more operations than connections (benchmarks/profiling.md,
"The connection lender"). The sync face takes psycopg_pool's own path
(:mod:`sessionware._sync.io.postgres_pool`).
"""

from __future__ import annotations

import collections
import os
import select
import socket
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from sessionware._async.io.primitives import Event, ThreadLock
from sessionware._async.stores.base import time_budget

__all__ = ["Lender", "broken", "pool_options", "sever"]

_Pool = AsyncConnectionPool["psycopg.AsyncConnection[Any]"]


def broken(connection: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> bool:
    """Whether an idle connection is known to be broken, without a round trip:
    an idle connection's socket has nothing to read, unless the server sent an
    error (it is shutting down, it ended the session) or closed it."""
    pgconn = connection.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        # the server's last words (an error: "terminating connection") come
        # before its end of the stream, and one read may see only the words
        for _ in range(3):
            if not poller.poll(0):
                break
            pgconn.consume_input()  # raises once it reads the end of the stream
    except (OSError, psycopg.Error):
        return True
    return pgconn.status != pq.ConnStatus.OK


def sever(connection: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> None:
    """Shut the socket down under a statement that overran: the driver's wait
    ends at once, with an error, and the pool discards the connection."""
    try:
        with socket.socket(fileno=os.dup(connection.pgconn.socket)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # closed already


def pool_options(low: int, high: int, timeout: float, prepare: bool) -> dict[str, Any]:
    """The pool's options, on both faces. reconnect_timeout: a pool that failed
    to reconnect for so long stops (its backoff has no cap), and the next
    operation finds a server back at once."""
    return {"open": False, "min_size": low, "max_size": high, "timeout": timeout,
            "name": "sessionware", "reconnect_timeout": max(5.0, timeout),
            "kwargs": {"autocommit": True, "prepare_threshold": 0 if prepare else None,
                       "connect_timeout": max(1, round(timeout))}}


class _Turn:
    """An operation waiting for a connection another operation hands on (or,
    with ``retry``, for a free place to take one from the pool)."""

    __slots__ = ("connection", "event", "retry")

    def __init__(self) -> None:
        self.event = Event()
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.retry = False


class Lender:
    """The connections a store checked out of its pool (at most ``limit``).

    An operation takes an idle connection, else one from the pool while fewer
    than ``limit`` are out, else waits its turn: a connection given back goes
    straight to the first operation waiting (FIFO), or, when it is discarded,
    that operation takes its place in the pool. Idle connections the server
    closed meanwhile (a restart, a terminated session) are found without a
    round trip and discarded."""

    def __init__(self, pool: _Pool, limit: int, timeout: float) -> None:
        self.pool = pool
        self._limit = limit
        self._timeout = timeout  # seconds an operation may wait for a connection
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._out = 0  # checked out of the pool: idle, lent, or being opened
        self._turns: collections.deque[_Turn] = collections.deque()
        self._lock = ThreadLock()
        self._closed = False

    @classmethod
    async def opened(cls, dsn: str, low: int, high: int, timeout: float,
                     prepare: bool) -> Lender:
        """The lender of a new pool of ``low`` to ``high`` connections."""
        pool: _Pool = AsyncConnectionPool(dsn, **pool_options(low, high, timeout, prepare))
        await pool.open(wait=False)  # starts its workers; connects in the background
        return cls(pool, high, timeout)

    async def borrow(self) -> psycopg.AsyncConnection[Any]:
        while True:
            connection, turn = None, None
            with self._lock:
                if self._closed:
                    raise PoolClosed("the store was closed")
                if self._idle:
                    connection = self._idle.pop()
                elif self._out < self._limit:
                    self._out += 1
                else:
                    turn = _Turn()
                    self._turns.append(turn)
            if turn is not None:
                connection = await self._wait(turn)
                if connection is None:
                    continue  # a place came free: take one from the pool
            elif connection is None:
                try:
                    connection = await self.pool.getconn(timeout=time_budget(self._timeout))
                except BaseException:
                    self._lost()
                    raise
            if not broken(connection):
                return connection
            await self._discard(connection)

    async def _wait(self, turn: _Turn) -> psycopg.AsyncConnection[Any] | None:
        try:
            await turn.event.wait(time_budget(self._timeout))
        except BaseException:  # cancelled: what was handed to this turn goes on
            if self._withdraw(turn):
                if turn.connection is not None:
                    await self.give_back(turn.connection)
                elif turn.retry:
                    self._lost(returned=False)
            raise
        if not self._withdraw(turn):
            raise PoolTimeout(f"no connection came free within {time_budget(self._timeout):.1f}s")
        return turn.connection

    def _withdraw(self, turn: _Turn) -> bool:
        """Take ``turn`` out of the queue; whether it was served already."""
        with self._lock:
            try:
                self._turns.remove(turn)
            except ValueError:
                return True
            return False

    async def give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        pgconn = connection.pgconn
        if (pgconn.status == pq.ConnStatus.OK
                and pgconn.transaction_status == pq.TransactionStatus.IDLE):
            with self._lock:
                turn = None if self._closed or not self._turns else self._turns.popleft()
                if turn is not None:
                    turn.connection = connection
                elif not self._closed:
                    self._idle.append(connection)
                    return
            if turn is not None:
                turn.event.set()
                return
        await self._discard(connection)

    async def _discard(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Hand ``connection`` back to the pool (which discards a broken one,
        and resets and keeps one left in a transaction)."""
        self._lost()
        await self.pool.putconn(connection)

    def _lost(self, *, returned: bool = True) -> None:
        """One connection fewer out of the pool (``returned``), or a place a
        cancelled turn did not take: the first waiting turn takes it."""
        with self._lock:
            if returned:
                self._out -= 1
            turn = self._turns.popleft() if self._turns else None
            if turn is not None:
                turn.retry = True
        if turn is not None:
            turn.event.set()

    async def aclose(self, timeout: float) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            turns, self._turns = self._turns, collections.deque()
        for turn in turns:
            turn.retry = True
            turn.event.set()
        for connection in idle:
            await self.pool.putconn(connection)
        await self.pool.close(timeout=timeout)

