"""DynamoDBStore's client, sync face: botocore's, one per process, shared by
its threads (botocore clients are thread-safe).

Hand-written, the counterpart of :mod:`sessionware._async.io.dynamodb_client`
(aiobotocore's). A blocking request cannot be cancelled as the async face's
is: instead each request's read timeout is what is left of the core's store
call (:func:`~sessionware._sync.io.primitives.time_left`), when that is less
than the client's, through botocore's per-request ``read_timeout`` (botocore
releases without it ignore it, and the client's read timeout bounds the
request alone).
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config  # type: ignore[import-untyped]
from botocore.session import get_session  # type: ignore[import-untyped]

from sessionware._forks import generation
from sessionware._sync.io.primitives import ThreadLock, time_left

__all__ = ["close_client", "home", "open_client"]


def open_client(options: dict[str, Any], config: dict[str, Any]) -> Any:
    """A DynamoDB client made with ``options`` (endpoint, region,
    credentials) and botocore ``config`` (timeouts, retries, pool size)."""
    with _making:  # a session is not thread-safe while it makes clients
        client = _session().create_client("dynamodb", config=Config(**config), **options)
    read_timeout = float(config["read_timeout"])

    def bound_read(context: dict[str, Any], **_: Any) -> None:
        left = time_left()
        if left is not None and left < read_timeout:
            context["read_timeout"] = max(left, _SHORTEST)

    client.meta.events.register("before-call.dynamodb", bound_read)
    return client


def close_client(client: Any) -> None:
    client.close()


def home() -> object:
    """What a client belongs to: nothing here but the process (threads share it)."""
    return None


_SHORTEST = 0.01  # seconds: a read timeout of 0 would mean none at all
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
