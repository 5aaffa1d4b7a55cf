"""PostgresStore's pooled connections, sync face: psycopg_pool's own checkout
and return. The async face's lender (:mod:`sessionware._async.io.postgres_pool`)
measured no faster here (benchmarks/profiling.md, "The connection lender").
Hand-written, with the same names.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from sessionware._async.io.postgres_pool import broken, pool_options, sever
from sessionware._sync.stores.base import time_budget

__all__ = ["Lender", "broken", "pool_options", "sever"]


class Lender:
    """Connections of ``pool``; an idle one the server closed meanwhile (a
    restart) is found without a round trip and discarded."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], limit: int,
                 timeout: float) -> None:
        self.pool = pool
        self._timeout = timeout  # seconds an operation may wait for a connection

    @classmethod
    def opened(cls, dsn: str, low: int, high: int, timeout: float, prepare: bool) -> Lender:
        """The lender of a new pool of ``low`` to ``high`` connections."""
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn, **pool_options(low, high, timeout, prepare))
        pool.open(wait=False)  # starts its workers; connects in the background
        return cls(pool, high, timeout)

    def borrow(self) -> psycopg.Connection[Any]:
        while True:
            connection = self.pool.getconn(timeout=time_budget(self._timeout))
            if not broken(connection):
                return connection
            self.pool.putconn(connection)  # the pool discards it

    def give_back(self, connection: psycopg.Connection[Any]) -> None:
        self.pool.putconn(connection)

    def close(self, timeout: float) -> None:
        self.pool.close(timeout=timeout)
