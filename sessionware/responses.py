"""What a client gets when the session cannot be served, for both drivers.

The mapping is policy, so it lives here once: waiting too long or a store that
is down is the server's temporary trouble (503 with Retry-After); a session
that cannot be saved as it is (a value JSON cannot hold, over the size limit)
is the application's bug (500). Either way one log line says what happened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sessionware.exceptions import (
    LeaseLost,
    LockTimeout,
    SerializationError,
    SessionwareError,
    StoreError,
)

__all__ = ["ErrorHandler", "ErrorResponse", "default_error_response", "respond_to"]

logger = logging.getLogger("sessionware")


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A complete, small HTTP response."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def all_headers(self) -> list[tuple[str, str]]:
        return [("content-type", "text/plain; charset=utf-8"),
                ("content-length", str(len(self.body))), *self.headers]


ErrorHandler = Callable[[SessionwareError], ErrorResponse]


def default_error_response(exc: SessionwareError) -> ErrorResponse:
    """503 with Retry-After for lock waits, lost leases and store outages; 500
    for sessions that cannot be serialized or stored."""
    if isinstance(exc, LockTimeout):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return ErrorResponse(503, b"Session busy, retry shortly.\n", [("retry-after", retry)])
    if isinstance(exc, (StoreError, LeaseLost)):
        return ErrorResponse(503, b"Session store unavailable.\n", [("retry-after", "1")])
    return ErrorResponse(500, b"Session could not be saved.\n")


def respond_to(exc: SessionwareError, handler: ErrorHandler) -> ErrorResponse:
    """Log ``exc`` once, at a level that fits, and map it to a response."""
    if isinstance(exc, SerializationError):
        logger.error("session not saved: %s", exc)
    elif isinstance(exc, LockTimeout):
        logger.info("session lock not granted: %s", exc)
    else:
        logger.warning("session store failed: %s: %s", type(exc).__name__, exc)
    return handler(exc)
