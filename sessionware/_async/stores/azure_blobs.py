"""Where AzureTableStore keeps a session's data: in its entity, in Binary
pieces ``D00`` ... ``D10`` of at most 64 KiB, up to ``inline_limit`` bytes;
past that in a new blob ``<key>/<random hex>`` of the store's container,
which the entity's ``Blob`` names (``""``: inline). A blob is uploaded before
an entity names it, never overwritten, and deleted once none does; the
purge's sweep deletes what a crash left ("Blobs never leak" in
docs/stores/azure.md). Permissions, as a SAS: blob read, create, delete
(``srt=o``, ``sp=rcd``); container list, for the sweep (``srt=c``, ``sp=l``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sessionware._async.io.azure_clients import ContainerClient, TableClient
from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
)

__all__ = ["MAX_DATA", "MAX_INLINE", "Blobs", "Missing", "inline", "joined", "named"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

PIECE = 64 * 1024  # bytes: the most one Binary property holds
# pieces inline: Azurite counts the entity's 1 MiB against its base64 form, so
# 11 pieces is what both it and Azure accept
MAX_PIECES = 11
MAX_INLINE = MAX_PIECES * PIECE
MAX_DATA = 64 * 1024 * 1024  # bytes: a limit of ours, for blobs
PIECE_NAMES = tuple(f"D{i:02}" for i in range(MAX_PIECES))
_CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_LIST_PAGE = 100  # blobs per page of the sweep's listing

# The sweep's filter (OData), no parameters: the entities whose data is in a
# blob, and which blob; any other blob in the container is an orphan.
NAMING_A_BLOB = "Blob ne ''"
NAMING_SELECT = ["PartitionKey", "Blob"]
_NAMES_PAGE = 1000  # entities: the most one query answers (Table storage's $top)


class Missing(Exception):
    """404: no such entity, or blob."""


class Call(Protocol):
    """How the store makes one request: retried while known not applied,
    within its ``timeout``; the SDK's errors translated."""

    async def __call__(self, op: str, operation: Callable[[], Awaitable[T]]) -> T: ...


def inline(data: bytes) -> dict[str, bytes]:
    """The entity's pieces of ``data`` kept inline."""
    return {PIECE_NAMES[start // PIECE]: data[start:start + PIECE]
            for start in range(0, len(data), PIECE)}


def joined(entity: Any) -> bytes:
    """The data an entity keeps inline."""
    return b"".join(entity[name] for name in PIECE_NAMES if name in entity)


def named(entity: Any) -> str:
    """The blob an entity names (``""``: its data is inline)."""
    value = entity.get("Blob") or ""
    return str(getattr(value, "value", value))


def not_applied(exc: BaseException) -> bool:
    """Whether a failed write is known to have changed nothing."""
    if isinstance(exc, StoreUnavailable):
        return not exc.maybe_applied
    return isinstance(exc, (LeaseLost, StoreError))


class Blobs:
    """One store's blobs. ``client`` gives this process's container client,
    ``call`` makes a request, ``io`` gives its transport timeouts."""

    def __init__(self, container: str, *, inline_limit: int, orphan_age: float,
                 client: Callable[[], Awaitable[ContainerClient]], call: Call,
                 io: Callable[[], dict[str, Any]]) -> None:
        if not _CONTAINER_NAME.fullmatch(container):
            raise ConfigurationError(
                f"container name {container!r}: lower-case letters, digits and hyphens, 3 to 63")
        if not 0 <= inline_limit <= MAX_INLINE:
            raise ConfigurationError(f"inline_limit must be between 0 and {MAX_INLINE} bytes")
        self.container, self._inline_limit, self._orphan_age = container, inline_limit, orphan_age
        self._client, self._call, self._io = client, call, io

    async def stage(self, key: str, data: bytes) -> str:
        """Where ``data`` goes: ``""`` (inline, up to ``inline_limit``), or a
        new blob, uploaded now; write the entity that names it within
        :meth:`kept`."""
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        if len(data) <= self._inline_limit:
            return ""
        client = await self._client()
        name = f"{key}/{secrets.token_hex(8)}"
        await self._call("upload", lambda: client.upload_blob(
            name, data, overwrite=False, **self._io()))
        return name

    @contextlib.asynccontextmanager
    async def kept(self, blob: str) -> AsyncIterator[None]:
        """Around the write of an entity naming ``blob``: deletes the blob
        when the write fails known not applied (no entity names it then)."""
        try:
            yield
        except BaseException as exc:
            if blob and not_applied(exc):
                await self.drop(blob)
            raise

    async def load(self, op: str, name: str) -> bytes:
        """The data in blob ``name``; ``Missing`` when it was deleted since
        the entity naming it was read."""
        client = await self._client()
        download = await self._call(op, lambda: client.download_blob(name, **self._io()))
        return bytes(await self._call(op, download.readall))

    async def drop(self, name: str) -> None:
        """Delete a blob that no entity names any more (``""``: none); a
        failure leaves it to the purge's sweep."""
        if not name:
            return
        client = await self._client()
        try:
            await self._call("delete blob", lambda: client.delete_blob(name, **self._io()))
        except Missing:
            pass
        except StoreError as exc:
            logger.debug("left blob %s to the purge: %s", name, exc)

    async def sweep(self, table: TableClient) -> None:
        """Delete the blobs older than ``orphan_age`` that no entity of
        ``table`` names. The names are read first: a blob uploaded after that
        is young. The pages' own errors are the caller's to translate."""
        pages = table.query_entities(NAMING_A_BLOB, select=NAMING_SELECT,
                                     results_per_page=_NAMES_PAGE, **self._io()).by_page()
        names = {named(entity) async for page in pages async for entity in page}
        client = await self._client()
        cutoff = time.time() - self._orphan_age
        async for blob in client.list_blobs(results_per_page=_LIST_PAGE, **self._io()):
            if blob.name not in names and blob.last_modified.timestamp() < cutoff:
                await self.drop(blob.name)
