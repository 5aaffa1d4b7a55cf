"""AzureTableStore's clients, sync face: azure-data-tables' and
azure-storage-blob's blocking clients (over requests), shared by a process's
request threads. Hand-written, the counterpart of
:mod:`sessionware._async.io.azure_clients`.

requests keeps 10 connections per host unless told otherwise; a gthread worker
with more threads would open and drop connections past that at every burst,
so each client gets a transport whose pool holds ``connections``.
"""

from __future__ import annotations

from typing import Any

from sessionware.stores._errors import needs_extra

with needs_extra("AzureTableStore", "azure-data-tables and azure-storage-blob", "azure"):
    import requests
    from azure.core import MatchConditions
    from azure.core import exceptions as errors
    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode
    from azure.storage.blob import ContainerClient

__all__ = ["ContainerClient", "EdmType", "EntityProperty", "MatchConditions", "TableClient",
           "UpdateMode", "errors", "open_clients"]


def open_clients(connection_string: str, table: str, container: str, *, timeout: float,
                 connections: int) -> tuple[TableClient, ContainerClient]:
    """The table's and the container's clients, each with a connection pool
    of ``connections``; the SDK's retries off (see the async counterpart)."""
    options: dict[str, Any] = {"retry_total": 0, "connection_timeout": timeout,
                               "read_timeout": timeout}
    return (TableClient.from_connection_string(
                connection_string, table, transport=_transport(connections), **options),
            ContainerClient.from_connection_string(
                connection_string, container, transport=_transport(connections), **options))


def _transport(connections: int) -> RequestsTransport:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True)
