"""AzureTableStore's clients, async face: azure-data-tables' and
azure-storage-blob's ``aio`` clients (over aiohttp). Hand-written, with its
counterpart :mod:`sessionware._sync.io.azure_clients` (the blocking
clients, over requests). The store's one source reaches the SDK through
these names only: the clients, and what both faces share (azure-core's
``errors``, enums).

Both faces turn the SDK's own retries off (``retry_total=0``): the store
retries what is safe to retry itself, within its ``timeout``, so that a
throttled or unreachable service answers within the core's ``store_timeout``
instead of after the SDK's exponential backoff (up to minutes).
"""

from __future__ import annotations

from typing import Any

from sessionware.stores._errors import needs_extra

with needs_extra("AzureTableStore", "azure-data-tables, azure-storage-blob and aiohttp", "azure"):
    from azure.core import MatchConditions
    from azure.core import exceptions as errors
    from azure.data.tables import EdmType, EntityProperty, UpdateMode
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient

__all__ = ["ContainerClient", "EdmType", "EntityProperty", "MatchConditions", "TableClient",
           "UpdateMode", "errors", "open_clients"]

# aiohttp copies a bytes body in one step on the loop and warns past 1 MiB;
# larger blobs go up in blocks of 1 MiB (one request each, and one to commit
# the list), the sync face's in one request up to 64 MiB
_BODY_LIMIT = 1024 * 1024


def open_clients(connection_string: str, table: str, container: str, *, timeout: float,
                 connections: int) -> tuple[TableClient, ContainerClient]:
    """The table's and the container's clients. aiohttp opens connections as
    needed (``connections`` bounds the sync face's pool only)."""
    options: dict[str, Any] = {"retry_total": 0, "connection_timeout": timeout,
                               "read_timeout": timeout}
    return (TableClient.from_connection_string(connection_string, table, **options),
            ContainerClient.from_connection_string(
                connection_string, container, max_single_put_size=_BODY_LIMIT,
                max_block_size=_BODY_LIMIT, **options))
