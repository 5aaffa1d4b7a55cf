"""DynamoDBStore's client, sync face: botocore's, one per process, shared by
its threads (botocore clients are thread-safe).

Hand-written, the counterpart of :mod:`sessionware.stores._dynamodb_client`
(aiobotocore's).
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config  # type: ignore[import-untyped]
from botocore.session import get_session  # type: ignore[import-untyped]

from sessionware._forks import generation
from sessionware._sync._primitives import ThreadLock

__all__ = ["close_client", "home", "open_client"]


def open_client(options: dict[str, Any], config: dict[str, Any]) -> Any:
    """A DynamoDB client made with ``options`` (endpoint, region,
    credentials) and botocore ``config`` (timeouts, retries, pool size)."""
    with _making:  # a session is not thread-safe while it makes clients
        return _session().create_client("dynamodb", config=Config(**config), **options)


def close_client(client: Any) -> None:
    client.close()


def home() -> object:
    """What a client belongs to: nothing here but the process (threads share it)."""
    return None


_made: dict[int, Any] = {}  # process generation -> its session
_making = ThreadLock()  # fork-safe: a child never inherits it held


def _session() -> Any:
    """This process's botocore session: one, because each loads the service
    models anew (a few hundred ms)."""
    session = _made.get(generation())
    if session is None:
        _made.clear()
        session = _made[generation()] = get_session()
    return session
