"""DynamoDBStore's client, async face: aiobotocore's, one per event loop.

Hand-written, the counterpart of :mod:`sessionware._sync.io.dynamodb_client`
(botocore's): the two drivers make and close their clients differently, and
an aiobotocore client belongs to the event loop it was opened on. Everything
else (the requests, their answers and errors) is botocore's on both faces, so
the store is written once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]

from sessionware._forks import generation

__all__ = ["close_client", "home", "open_client"]


async def open_client(options: dict[str, Any], config: dict[str, Any]) -> Any:
    """A DynamoDB client made with ``options`` (endpoint, region,
    credentials) and botocore ``config`` (timeouts, retries, pool size)."""
    context = _session().create_client("dynamodb", config=AioConfig(**config), **options)
    return await context.__aenter__()


async def close_client(client: Any) -> None:
    await client.close()


def home() -> object:
    """What a client belongs to: the running event loop."""
    return asyncio.get_running_loop()


_made: dict[int, Any] = {}  # process generation -> its session


def _session() -> Any:
    """This process's aiobotocore session: one, because each loads the service
    models anew (a few hundred ms)."""
    session = _made.get(generation())
    if session is None:
        _made.clear()
        session = _made[generation()] = get_session()
    return session
