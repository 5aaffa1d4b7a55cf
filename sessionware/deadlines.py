"""Store-call timeouts without a timer per call.

Every request makes one or two store calls, each bounded by ``store_timeout``.
``asyncio.timeout`` creates, schedules and cancels a timer for each of them,
about a third of the core's own CPU per request. Here a call only registers
its deadline in a dict; one watchdog task per loop, awake only while calls are
in flight, cancels the overdue ones every ``timeout / 4`` seconds. So a call
that hangs is cut off between ``timeout`` and ``1.25 * timeout``: the bound
a slow store needs, at a dict insert and delete per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import TypeVar

__all__ = ["Deadlines", "remaining"]

T = TypeVar("T")

# The loop-time deadline of the store call in progress, for a store that
# blocks (see sessionware._loop.may_block): a blocking call cannot be
# cancelled by the watchdog, so it bounds its own wait with this.
_current_deadline: ContextVar[float | None] = ContextVar("sessionware_deadline",
                                                         default=None)


def remaining() -> float | None:
    """Seconds left for the store call in progress (``None`` outside one)."""
    deadline = _current_deadline.get()
    if deadline is None:
        return None
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


class _Call:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False


class Deadlines:
    """Bounds awaited operations by ``timeout`` seconds, raising TimeoutError."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._calls: dict[int, _Call] = {}
        self._watchdog: asyncio.Task[None] | None = None

    async def bound(self, operation: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        call = _Call(task, loop.time() + self.timeout)
        self._calls[id(call)] = call
        scope = _current_deadline.set(call.deadline)
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(), name="sessionware-deadlines")
        try:
            return await operation
        except asyncio.CancelledError:
            if call.expired and task.uncancel() == 0:
                raise TimeoutError from None  # our cancellation, not the caller's
            raise
        finally:
            _current_deadline.reset(scope)
            del self._calls[id(call)]

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Sleep first: a call that finished without suspending (a store
            # that may block) leaves no call behind by the watchdog's first
            # step, and a watchdog per call would cost a task per call.
            await asyncio.sleep(self.timeout / 4)
            if not self._calls:
                break
            now = loop.time()
            for call in list(self._calls.values()):
                if not call.expired and call.deadline <= now and call.task.get_loop() is loop:
                    call.expired = True
                    call.task.cancel()
        self._watchdog = None  # checked and cleared in one step: bound() starts a new one
