"""What each failure answers: the table in docs/failures.md, checked."""

from __future__ import annotations

import logging

import pytest

from sessionware import (
    LeaseLost,
    LockTimeout,
    OutcomeUnknown,
    QueueFull,
    SerializationError,
    SessionClosed,
    SessionTooLarge,
    SessionwareError,
    StoreError,
    StoreUnavailable,
    default_error_response,
)
from sessionware.responses import respond_to


@pytest.mark.parametrize(("error", "status", "retry_after", "says"), [
    (LockTimeout("waited", retry_after=2.5), 503, "3", b"busy"),
    (QueueFull("full"), 503, "1", b"busy"),
    (StoreUnavailable("down", maybe_applied=False), 503, "1", b"nothing was saved"),
    (StoreError("odd"), 503, "1", b"nothing was saved"),
    (LeaseLost("newer token"), 409, None, b"changes were refused"),
    (OutcomeUnknown("unconfirmed"), 500, None, b"may or may not have been saved"),
    (SerializationError("a set"), 500, None, b"could not be saved"),
    (SessionTooLarge(10, 5), 500, None, b"could not be saved"),
    (SessionClosed("changed after commit"), 500, None, b"could not be saved"),
])
def test_each_failure_says_what_happened(error: SessionwareError, status: int,
                                         retry_after: str | None, says: bytes) -> None:
    response = default_error_response(error)
    assert response.status == status
    assert dict(response.headers).get("retry-after") == retry_after
    assert says in response.body


@pytest.mark.parametrize(("error", "level"), [
    (LeaseLost("newer token"), logging.WARNING),
    (OutcomeUnknown("unconfirmed"), logging.ERROR),
    (SessionClosed("changed after commit"), logging.ERROR),
    (LockTimeout("waited"), logging.INFO),
])
def test_each_failure_is_logged_once_at_its_level(
    error: SessionwareError, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        respond_to(error, default_error_response)
    (record,) = caplog.records
    assert record.levelno == level
    assert str(error) in record.getMessage()
