"""Store-call timeouts, on both faces (sessionware/_async/io/primitives.py and
sessionware/_sync/io/primitives.py): the async face cuts a hung call off by one
watchdog; the sync face cannot cut a blocking call off, so it tells the call
how long it has left (``time_left``) and the store bounds its own wait."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from sessionware._async.io.primitives import Deadlines
from sessionware._async.io.primitives import time_left as async_time_left
from sessionware._sync.io.primitives import Deadlines as SyncDeadlines
from sessionware._sync.io.primitives import time_left

T = TypeVar("T")


async def bounded(deadlines: Deadlines, call: Awaitable[T]) -> T:
    async with deadlines.bound():
        return await call


# -- the async face ------------------------------------------------------------------

async def test_a_hung_call_is_cut_off_between_timeout_and_a_quarter_more() -> None:
    deadlines = Deadlines(0.4)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await bounded(deadlines, asyncio.Event().wait())
    assert 0.4 <= time.monotonic() - started < 0.4 * 1.25 + 0.2


async def test_calls_that_finish_in_time_return_their_result() -> None:
    deadlines = Deadlines(0.4)

    async def answer(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    results = await asyncio.gather(*(bounded(deadlines, answer(d / 100)) for d in range(20)))
    assert results == [d / 100 for d in range(20)]


async def test_the_callers_own_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(10.0)
    task = asyncio.create_task(bounded(deadlines, asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_only_the_overdue_call_is_cut_off() -> None:
    deadlines = Deadlines(0.3)
    hung = asyncio.create_task(bounded(deadlines, asyncio.Event().wait()))
    await asyncio.sleep(0.2)
    late_starter = asyncio.create_task(bounded(deadlines, asyncio.sleep(0.2, result="ok")))
    with pytest.raises(TimeoutError):
        await hung
    assert await late_starter == "ok"


async def test_the_async_face_never_asks_a_call_to_bound_itself() -> None:
    async with Deadlines(1.0).bound():
        assert async_time_left() is None


# -- the sync face -------------------------------------------------------------------

def test_a_blocking_call_is_told_the_time_it_has_left() -> None:
    assert time_left() is None  # outside a store call
    with SyncDeadlines(2.0).bound():
        first = time_left()
        assert first is not None and 1.5 < first <= 2.0
        time.sleep(0.2)
        second = time_left()
        assert second is not None and second <= first - 0.2
    assert time_left() is None


def test_the_time_left_never_goes_below_zero() -> None:
    with SyncDeadlines(0.01).bound():
        time.sleep(0.05)
        assert time_left() == 0.0


def test_a_nested_bound_gives_the_outer_one_back() -> None:
    with SyncDeadlines(30.0).bound():
        with SyncDeadlines(1.0).bound():
            inner = time_left()
            assert inner is not None and inner <= 1.0
        outer = time_left()
        assert outer is not None and outer > 25.0
    assert time_left() is None


def test_each_thread_has_its_own_deadline() -> None:
    seen: list[float | None] = []
    inside = threading.Event()
    done = threading.Event()

    def other_thread() -> None:
        with SyncDeadlines(1.0).bound():
            seen.append(time_left())
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert inside.wait(10)
        assert time_left() is None  # this thread makes no store call
        with SyncDeadlines(30.0).bound():
            mine = time_left()
            assert mine is not None and mine > 25.0
    finally:
        done.set()
        thread.join(10)
    (theirs,) = seen
    assert theirs is not None and theirs <= 1.0


def test_the_deadline_is_restored_when_the_call_raises() -> None:
    with pytest.raises(RuntimeError), SyncDeadlines(1.0).bound():
        raise RuntimeError("the store call failed")
    assert time_left() is None
