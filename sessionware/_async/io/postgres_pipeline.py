"""PostgresStore's lean path, async face: one pipelined connection per process.

Through psycopg's ``AsyncConnection.execute`` and a pool, one statement costs
about 75 µs of the client's CPU here: the pool's checkout and return, the
cursor, the adaptation of each parameter, a task that keeps psycopg's slow
reaction to a cancel away. Under load, each statement also holds a pooled
connection until the event loop gets back to its answer, so the pool's size
bounds the statements in flight.

The lean path sends the session operations over one connection per process
in libpq's pipeline mode (``psycopg.pq``, the libpq wrapper psycopg itself is
built on): each statement is a prepared one (prepared once, when the
connection opens), followed by its own Sync, so it is its own transaction and
one round trip, and an error fails that statement alone. Statements of
concurrent requests go out together (flushed once per event-loop turn, in one
system call) and their answers come back in order, resolving the callers'
futures straight from the socket's reader callback. A caller that is
cancelled (the core's deadline) abandons its future; the answer is read and
dropped, so the stream stays in step, and nothing waits for a stalled server
to acknowledge a cancel. A connection whose oldest statement has waited past
``timeout`` is closed, failing every statement on it; the next one reconnects.

psycopg still opens the connection (conninfo, TLS, authentication), and its
error classes (by SQLSTATE) are raised, so the store's error table
(``ERRORS`` in :mod:`sessionware._async.stores.postgres`) stays the one place where
errors become sessionware's. The sync face has no lean path
(:mod:`sessionware._sync.io.postgres_pipeline`): its request threads take pooled
connections.
"""

from __future__ import annotations

import asyncio
import collections
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq

from sessionware._async.io.shared_connection import SharedConnection

__all__ = ["LeanPath", "Rows"]

Rows = tuple[int, list[tuple[Any, ...]]]
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_INT8, _FLOAT8, _BYTEA, _BOOL, _TEXT = 20, 701, 17, 16, 25


class _Statement:
    """One named statement: its SQL with ``$n`` placeholders, and the order of
    its parameters."""

    __slots__ = ("name", "order", "sql")

    def __init__(self, name: str, template: str) -> None:
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        self.sql = _PLACEHOLDER.sub(number, template).encode()
        self.name = f"sessionware_{name}".encode()
        self.order = tuple(order)


def _encoded(value: Any) -> tuple[bytes | None, int]:
    """A parameter's value and format: bytes as binary (bytea), the rest as text."""
    if value is None:
        return None, 0
    if isinstance(value, bytes):
        return value, 1
    if isinstance(value, float):
        return repr(value).encode(), 0
    return str(value).encode(), 0


def _decoded(result: Any) -> Rows:
    """Row count and rows of a binary-format result."""
    types = [result.ftype(i) for i in range(result.nfields)]
    rows = []
    for row in range(result.ntuples):
        values: list[Any] = []
        for column, oid in enumerate(types):
            raw = result.get_value(row, column)
            if raw is None:
                values.append(None)
            elif oid == _INT8:
                values.append(int.from_bytes(raw, "big", signed=True))
            elif oid == _FLOAT8:
                values.append(struct.unpack("!d", raw)[0])
            elif oid == _BOOL:
                values.append(raw != b"\x00")
            elif oid == _TEXT:
                values.append(raw.decode())
            else:
                values.append(bytes(raw))
        rows.append(tuple(values))
    count = result.command_tuples
    return (count if count is not None else len(rows)), rows


def _error(result: Any) -> psycopg.Error:
    """psycopg's exception for an error result, by its SQLSTATE."""
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = (result.error_message or b"").decode(errors="replace").strip()
    if sqlstate is None:
        return psycopg.OperationalError(message or "the statement failed")
    try:
        cls = psycopg.errors.lookup(sqlstate.decode())
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message)


class _Connection:
    """One pipelined connection: statements out in order, answers back in
    order, each resolving its caller's future."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._connection = connection
        self._pg = connection.pgconn
        self._timeout = timeout
        self._socket = self._pg.socket
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = (
            collections.deque())
        self._results: list[Any] = []  # of the statement being answered
        self._answer: Any = None  # its first result, once complete
        self._flushing = False
        self._writing = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.broken: BaseException | None = None
        self._pg.enter_pipeline_mode()
        self.loop.add_reader(self._socket, self._readable)

    def execute(self, name: bytes, values: Sequence[bytes | None],
                formats: Sequence[int]) -> asyncio.Future[Any]:
        """Run a prepared statement; binary results."""
        return self.send(self._pg.send_query_prepared, name, values, formats, 1)

    def prepare(self, name: bytes, sql: bytes) -> asyncio.Future[Any]:
        return self.send(self._pg.send_prepare, name, sql, None)

    def send(self, issue: Any, *args: Any) -> asyncio.Future[Any]:
        """Issue one command (``issue(*args)``, a libpq send function) and its
        Sync; the future gets its first result."""
        answer: asyncio.Future[Any] = self.loop.create_future()
        if self.broken is None:
            try:
                issue(*args)
                self._pg.pipeline_sync()
            except psycopg.Error as exc:
                self.fail(psycopg.OperationalError(f"sending failed: {exc}"))
        if self.broken is not None:
            answer.set_exception(self.broken)
            return answer
        self._pending.append((answer, self.loop.time()))
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self._timeout, self._check_overdue)
        return answer

    def _flush(self) -> None:
        self._flushing = False
        if self.broken is not None:
            return
        try:
            unsent = self._pg.flush()
        except psycopg.Error as exc:
            self.fail(psycopg.OperationalError(f"sending failed: {exc}"))
            return
        if unsent and not self._writing:
            self._writing = True
            self.loop.add_writer(self._socket, self._writable)
        elif not unsent and self._writing:
            self._writing = False
            self.loop.remove_writer(self._socket)

    def _writable(self) -> None:
        self._flush()

    def _readable(self) -> None:
        pg = self._pg
        try:
            pg.consume_input()
            while not pg.is_busy():
                result = pg.get_result()
                if result is None:
                    if not self._results:
                        break  # nothing more for now
                    self._answer, self._results = self._results[0], []
                elif result.status == _SYNC:
                    self._resolve(self._answer)
                    self._answer = None
                else:
                    self._results.append(result)
        except (psycopg.Error, IndexError) as exc:
            self.fail(psycopg.OperationalError(
                f"the server closed the connection or broke the stream: {exc}"))

    def _resolve(self, result: Any) -> None:
        answer, _ = self._pending.popleft()
        if answer.done():
            return  # its caller gave up: the answer is dropped
        if result is None:
            answer.set_exception(psycopg.OperationalError("no result for the statement"))
        elif result.status in _OK:
            answer.set_result(result)
        else:
            answer.set_exception(_error(result))

    def _check_overdue(self) -> None:
        """One timer while statements are in flight, not one per statement:
        the oldest unanswered one decides, abandoned ones included."""
        self._watchdog = None
        if not self._pending or self.broken is not None:
            return
        overdue_in = self._pending[0][1] + self._timeout - self.loop.time()
        if overdue_in <= 0:
            self.fail(psycopg.OperationalError(
                f"PostgreSQL did not answer within {self._timeout}s"))
        else:
            self._watchdog = self.loop.call_later(overdue_in, self._check_overdue)

    def fail(self, error: BaseException) -> None:
        """Close the connection and fail every statement still waiting on it."""
        if self.broken is None:
            self.broken = error
            self.loop.remove_reader(self._socket)
            if self._writing:
                self.loop.remove_writer(self._socket)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._pg.finish()
        while self._pending:
            answer, _ = self._pending.popleft()
            if not answer.done():
                answer.set_exception(error)
                answer.exception()  # retrieved: an abandoned future must not warn


class _Lane(SharedConnection[_Connection]):
    """One of the lean path's pipelined connections, opened (and its
    statements prepared) at first use, reopened after a failure, in a forked
    child, or on another event loop."""

    def __init__(self, path: LeanPath) -> None:
        super().__init__()
        self._path = path

    async def _open(self) -> _Connection:
        return await self._path.opened()

    def _closed(self) -> BaseException:
        return psycopg.OperationalError("the store was closed")


class LeanPath:
    """The session statements over ``connections`` shared pipelined
    connections per process, taken in turn. On a server that waits for the
    WAL flush at every commit, one connection's commits wait one after
    another; several connections' waits overlap, and the server flushes the
    commits of all that wait at once."""

    def __init__(self, dsn: str, statements: Mapping[str, str], *, timeout: float,
                 connections: int = 1) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._statements = {name: _Statement(name, sql) for name, sql in statements.items()}
        self._lanes = [_Lane(self) for _ in range(connections)]
        self._next = 0

    @classmethod
    def for_store(cls, dsn: str, statements: Mapping[str, str], *, prepare: bool,
                  timeout: float, connections: int = 1) -> LeanPath | None:
        """The lean path, where it applies: prepared statements allowed (not
        a transaction-mode PgBouncer before 1.21)."""
        return (cls(dsn, statements, timeout=timeout, connections=connections) if prepare
                else None)

    async def execute(self, name: str, params: Mapping[str, Any]) -> Rows:
        statement = self._statements[name]
        values, formats = [], []
        for key in statement.order:
            value, form = _encoded(params[key])
            values.append(value)
            formats.append(form)
        lanes = self._lanes
        lane = lanes[self._next]
        self._next = (self._next + 1) % len(lanes)
        connection = await lane.connection()
        return _decoded(await connection.execute(statement.name, values, formats))

    def close(self) -> None:
        """Close this process's and this loop's connections (:meth:`SharedConnection.close`)."""
        for lane in self._lanes:
            lane.close()

    async def opened(self) -> _Connection:
        """A new connection, its statements prepared."""
        raw = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, round(self._timeout)))
        try:
            connection = _Connection(raw, self._timeout)
        except BaseException:
            await raw.close()
            raise
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*(connection.prepare(s.name, s.sql)
                                       for s in self._statements.values()))
        except BaseException as exc:
            connection.fail(psycopg.OperationalError(f"preparing the statements failed: {exc}"))
            if isinstance(exc, TimeoutError):
                raise psycopg.OperationalError(
                    f"PostgreSQL did not prepare the statements within {self._timeout}s"
                ) from exc
            raise
        return connection
