"""One connection per process and event loop, shared by every caller: the
base of the lean paths (``redis_pipe``, ``postgres_pipeline``), which
pipeline every operation of a loop over it."""

from __future__ import annotations

import abc
import asyncio
from typing import Generic, Protocol, TypeVar

from sessionware._forks import generation

__all__ = ["SharedConnection"]


class Pipelined(Protocol):
    """What a lean path's connection has: its event loop, why it broke (or
    ``None``), and ``fail``, which closes it and fails what waits on it."""

    loop: asyncio.AbstractEventLoop
    broken: BaseException | None

    def fail(self, error: BaseException) -> None: ...


C = TypeVar("C", bound=Pipelined)


class SharedConnection(abc.ABC, Generic[C]):
    """The connection of this process and event loop, opened by
    :meth:`_open` at first use, by one attempt every caller awaits; opened
    anew after a failure, on another loop, or in a forked child, which keeps
    its parent's referenced and never touches it (its socket is the
    parent's; a finalizer must not close it here).

    A subclass's operations check the connection inline, the hot path::

        connection = self._connection
        if connection is None or connection.broken is not None or not self._owned(connection):
            connection = await self._connect()

    and whoever holds one calls :meth:`connection`, which does the same.
    """

    def __init__(self) -> None:
        self._connection: C | None = None
        self._connecting: asyncio.Task[C] | None = None
        self._orphans: list[C] = []  # a forked parent's: never closed here
        self._generation = generation()

    @abc.abstractmethod
    async def _open(self) -> C:
        """Open, and make ready, a connection."""

    @abc.abstractmethod
    def _closed(self) -> BaseException:
        """The driver's error for the commands a close fails."""

    def _owned(self, connection: C) -> bool:
        if self._generation != generation():
            self._orphans.append(connection)
            self._generation, self._connection = generation(), None
            return False
        return connection.loop is asyncio.get_running_loop()

    async def connection(self) -> C:
        """The connection of this process and loop, opened (again) if it has none."""
        connection = self._connection
        if connection is None or connection.broken is not None or not self._owned(connection):
            connection = await self._connect()
        return connection

    async def _connect(self) -> C:
        """One connection attempt shared by every caller that needs it now."""
        task = self._connecting
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._connecting = asyncio.ensure_future(self._open())
        self._connection = await asyncio.shield(task)
        return self._connection

    def close(self) -> None:
        """Close the connection, if it is this process's and this loop's
        (another loop's is left to it), failing what waits on it."""
        connection, self._connection = self._connection, None
        if (connection is not None and self._generation == generation()
                and connection.loop is asyncio.get_running_loop()):
            connection.fail(self._closed())
