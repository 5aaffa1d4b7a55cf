"""The store kernel's small helpers (sessionware/_async/stores/base.py and
sessionware/stores/_errors.py): retries inside a time budget, the constructor
check of limits, the guarded driver import, and how a driver error is described."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from sessionware._async.stores.base import check_limits, retried
from sessionware._sync.stores.base import retried as sync_retried
from sessionware.exceptions import ConfigurationError
from sessionware.stores._errors import described, needs_extra


class Throttled(Exception):
    pass


def failing(times: int, error: BaseException) -> tuple[list[float], Callable[[], str]]:
    """A call that raises ``error`` ``times`` times, then answers "done"; and
    the moments of its tries."""
    tries: list[float] = []

    def call() -> str:
        tries.append(time.monotonic())
        if len(tries) <= times:
            raise error
        return "done"

    return tries, call


async def test_retried_calls_again_while_retry_holds() -> None:
    tries, call = failing(3, Throttled("slow down"))

    async def once() -> str:
        return call()

    answer = await retried(once, retry=lambda exc: isinstance(exc, Throttled),
                           timeout=5.0, base=0.002, cap=0.004)
    assert answer == "done"
    assert len(tries) == 4


def test_retried_on_the_sync_face() -> None:
    tries, call = failing(2, Throttled("slow down"))
    answer = sync_retried(call, retry=lambda exc: isinstance(exc, Throttled),
                          timeout=5.0, base=0.002, cap=0.004)
    assert answer == "done"
    assert len(tries) == 3


async def test_retried_raises_an_error_retry_refuses_at_once() -> None:
    tries, call = failing(3, ValueError("not ours to retry"))

    async def once() -> str:
        return call()

    with pytest.raises(ValueError, match="not ours to retry"):
        await retried(once, retry=lambda exc: isinstance(exc, Throttled),
                      timeout=5.0, base=0.002, cap=0.004)
    assert len(tries) == 1


async def test_retried_gives_up_with_the_last_error_within_the_budget() -> None:
    tries, call = failing(1_000, Throttled("still throttled"))

    async def once() -> str:
        return call()

    started = time.monotonic()
    with pytest.raises(Throttled, match="still throttled"):
        await retried(once, retry=lambda exc: True, timeout=0.2, base=0.02, cap=0.04)
    assert time.monotonic() - started < 0.2 + 0.1  # no try starts past the budget
    assert 2 <= len(tries) < 1_000
    # backoff: no two tries back to back
    assert all(later - earlier >= 0.009 for earlier, later in itertools.pairwise(tries))


def test_check_limits() -> None:
    check_limits(0.001, 1)
    for timeout, connections in ((0, 1), (-1.0, 10), (5.0, 0)):
        with pytest.raises(ConfigurationError, match="need timeout > 0 and max_connections >= 1"):
            check_limits(timeout, connections)


def test_needs_extra_names_the_extra_and_keeps_the_cause() -> None:
    with needs_extra("ExampleStore", "example-driver", "example"):
        import json  # noqa: F401 - present: nothing happens
    with (pytest.raises(ImportError) as caught,
          needs_extra("ExampleStore", "example-driver", "example")):
        import sessionware_no_such_driver  # type: ignore[import-not-found]  # noqa: F401
    assert str(caught.value) == (
        "ExampleStore needs example-driver: pip install sessionware[example]")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_described_drops_the_reply_document_pymongo_appends() -> None:
    error = RuntimeError("Unauthorized on sessions, full error: {'ok': 0.0, 'code': 13}")
    assert described(error) == "RuntimeError: Unauthorized on sessions"
    assert described(RuntimeError("  ")) == "RuntimeError"
    assert described(OSError("refused")) == "OSError: refused"
