"""What the SQL stores (SQLiteStore, PostgresStore) share: the table of a
session's rows, statements formatted once with the store's names, rows read
as :class:`Record`, keyset pagination, and purging in batches."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from sessionware._async.stores.base import Record
from sessionware.exceptions import ConfigurationError

Records = list[Record]

__all__ = ["CREATE_INDEX", "RECORD_TIMES", "checked_table", "create_table", "purge_in_batches",
           "record", "records", "scan_by_key", "statements"]

# setup(): the index that finds expired rows, oldest first.
CREATE_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)"

# The columns of a Record after its key and data (every write that clears
# locked_until clears locked_at with it).
RECORD_TIMES = ("expires_at", "locked_until", "created_at", "locked_at")


def create_table(key: str, data: str, token: str, time: str, *, extra: str = "",
                 options: str = "") -> str:
    """setup()'s ``CREATE TABLE IF NOT EXISTS {table}``: the columns of a
    :class:`Record` in a dialect's types (``time``: a deadline, NULL for none),
    then the store's ``extra`` columns."""
    return (f"CREATE TABLE IF NOT EXISTS {{table}} (key {key} PRIMARY KEY, data {data} NOT NULL,"
            f" token {token} NOT NULL, locked_until {time}, expires_at {time} NOT NULL,"
            f" absolute_expires_at {time}, created_at {time}, locked_at {time}{extra}){options}")


def checked_table(table: str, longest: int) -> str:
    """``table``, checked before it goes into SQL (as an identifier)."""
    if not re.fullmatch(rf"[A-Za-z_][A-Za-z0-9_]{{0,{longest - 1}}}", table):
        raise ConfigurationError(
            f"table name {table!r}: use letters, digits and _ (up to {longest})")
    return table


def statements(templates: Mapping[str, str], **names: str) -> dict[str, str]:
    """Each statement by its name, formatted once with the store's ``names``."""
    return {name: template.format(**names) for name, template in templates.items()}


def record(key: str, row: Sequence[Any]) -> Record:
    """A row ``(data, *RECORD_TIMES)`` as the :class:`Record` of ``key``."""
    data, *times = row
    return Record(key, bytes(data), *times)


def records(rows: Iterable[Sequence[Any]]) -> list[Record]:
    """Rows ``(key, data, *RECORD_TIMES)`` as :class:`Record` s."""
    return [record(row[0], row[1:]) for row in rows]


async def scan_by_key(batch: Callable[[str, int], Awaitable[Records]],
                      batch_size: int) -> AsyncIterator[Records]:
    """:meth:`Store.scan` by keyset pagination: ``batch(after, limit)`` reads up
    to ``limit`` live records with keys past ``after`` ('' at first), in key order."""
    after = ""
    while True:
        found = await batch(after, batch_size)
        if found:
            yield found
        if len(found) < batch_size:
            return
        after = found[-1].key


async def purge_in_batches(batch: Callable[[], Awaitable[int]], batch_size: int,
                           progress: Callable[[int], object] | None) -> int:
    """Call ``batch()`` (a count of rows deleted, up to ``batch_size``, and
    reported) until one is not full; ``progress`` hears each count but 0.
    How many were deleted in all."""
    purged = 0
    while True:
        count = await batch()
        purged += count
        if progress is not None and count:
            progress(count)
        if count < batch_size:
            return purged
