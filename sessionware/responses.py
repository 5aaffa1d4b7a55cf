"""What a client gets when the session cannot be served, for both drivers.

The mapping is policy, so it lives here once, and each answer says what
happened to the request's session changes (docs/failures.md has the table):

* waiting too long, or a store that is down, is the server's temporary trouble:
  503 with Retry-After, and nothing was saved;
* a lease lost to a newer request: 409, the changes were refused;
* a write the store never confirmed: 500 without Retry-After, because the
  change may have been applied and a retry could apply it twice;
* a session that cannot be saved as it is (a value JSON cannot hold, over the
  size limit, changed after its commit) is the application's bug: 500.

Either way one log line says what happened.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sessionware.exceptions import (
    LeaseLost,
    LockTimeout,
    OutcomeUnknown,
    SerializationError,
    SessionClosed,
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
    """503 with Retry-After for lock waits and store outages (nothing saved);
    409 for a lost lease (changes refused); 500 for a write the store never
    confirmed and for sessions that cannot be saved."""
    if isinstance(exc, LockTimeout):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return ErrorResponse(503, b"Session busy, retry shortly.\n", [("retry-after", retry)])
    if isinstance(exc, LeaseLost):
        return ErrorResponse(409, b"Session lease lost to a newer request: "
                                  b"this request's session changes were refused.\n")
    if isinstance(exc, OutcomeUnknown):
        return ErrorResponse(500, b"Session store did not confirm the change: "
                                  b"it may or may not have been saved.\n")
    if isinstance(exc, StoreError):
        return ErrorResponse(503, b"Session store unavailable, nothing was saved; "
                                  b"retry shortly.\n", [("retry-after", "1")])
    return ErrorResponse(500, b"Session could not be saved.\n")


def respond_to(exc: SessionwareError, handler: ErrorHandler) -> ErrorResponse:
    """Log ``exc`` once, at a level that fits, and map it to a response."""
    if isinstance(exc, (SerializationError, SessionClosed)):
        logger.error("session not saved: %s", exc)
    elif isinstance(exc, LockTimeout):
        logger.info("session lock not granted: %s", exc)
    elif isinstance(exc, LeaseLost):
        logger.warning("session changes refused, the lease was lost: %s", exc)
    elif isinstance(exc, OutcomeUnknown):
        logger.error("session write not confirmed: %s", exc)
    else:
        logger.warning("session store failed: %s: %s", type(exc).__name__, exc)
    return handler(exc)
