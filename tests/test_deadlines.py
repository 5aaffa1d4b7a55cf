"""Store-call timeouts by one watchdog (sessionware/deadlines.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sessionware.deadlines import Deadlines


async def test_a_hung_call_is_cut_off_between_timeout_and_a_quarter_more() -> None:
    deadlines = Deadlines(0.4)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await deadlines.bound(asyncio.Event().wait())
    assert 0.4 <= time.monotonic() - started < 0.4 * 1.25 + 0.2


async def test_calls_that_finish_in_time_return_their_result() -> None:
    deadlines = Deadlines(0.4)

    async def answer(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    results = await asyncio.gather(*(deadlines.bound(answer(d / 100)) for d in range(20)))
    assert results == [d / 100 for d in range(20)]


async def test_the_callers_own_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(10.0)
    task = asyncio.create_task(deadlines.bound(asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_only_the_overdue_call_is_cut_off() -> None:
    deadlines = Deadlines(0.3)
    hung = asyncio.create_task(deadlines.bound(asyncio.Event().wait()))
    await asyncio.sleep(0.2)
    late_starter = asyncio.create_task(deadlines.bound(asyncio.sleep(0.2, result="ok")))
    with pytest.raises(TimeoutError):
        await hung
    assert await late_starter == "ok"
