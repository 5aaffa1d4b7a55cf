"""PostgresStore's lean path, sync face: there is none. A request thread
blocks on its own statement anyway, so pipelining the statements of a
process's threads over one connection would make them wait for each other;
each takes a pooled connection instead (:mod:`sessionware._sync.io.postgres_pool`).
Hand-written, the counterpart of :mod:`sessionware._async.io.postgres_pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LeanPath", "Rows"]

Rows = tuple[int, list[tuple[Any, ...]]]


class LeanPath:
    """Never made: :meth:`for_store` answers ``None``."""

    @classmethod
    def for_store(cls, dsn: str, statements: Mapping[str, str], *, prepare: bool,
                  timeout: float, connections: int = 1) -> LeanPath | None:
        return None

    def execute(self, name: str, params: Mapping[str, Any]) -> Rows:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        pass
