"""Per-session waiting lines inside one process.

Requests of one process for the same session line up here, first come first
served, so only the head of the line talks to the store: a burst of N requests
for one session costs the store one waiter per process instead of N pollers,
and the hand-over between two local requests needs no store wake-up at all.

The line is also where ASP.NET's ``RequestQueueLimitPerSession`` lives: past
``limit`` requests (holder included), more are turned away at once.
"""

from __future__ import annotations

import asyncio
from collections import deque

from sessionware.exceptions import LockTimeout, QueueFull

__all__ = ["SessionQueues"]


class _Line:
    __slots__ = ("busy", "waiters")

    def __init__(self) -> None:
        self.busy = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return int(self.busy) + len(self.waiters)


class SessionQueues:
    """FIFO turns per key. ``enter`` waits for the key's turn; ``leave`` passes
    it to the next in line. Both run on one event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lines: dict[str, _Line] = {}

    def waiting(self, key: str) -> int:
        """Requests holding or waiting for ``key``'s turn (for tests and metrics)."""
        line = self._lines.get(key)
        return len(line) if line else 0

    async def enter(self, key: str, timeout: float) -> None:
        """Wait until it is this caller's turn for ``key``.

        Raises :class:`QueueFull` at once when the line is full, and
        :class:`LockTimeout` when the turn does not come within ``timeout``.
        """
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        if not line.busy:
            line.busy = True
            return
        if len(line) >= self.limit:
            raise QueueFull(f"{len(line)} requests already wait for this session")
        turn = asyncio.get_running_loop().create_future()
        line.waiters.append(turn)
        try:
            # shield: a timeout must not cancel a turn that was handed over meanwhile
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except BaseException as exc:
            self._abandon(key, line, turn)
            if isinstance(exc, TimeoutError):
                raise LockTimeout("timed out waiting for this session's lock") from None
            raise

    def leave(self, key: str) -> None:
        """Pass ``key``'s turn to the next waiter, or free the line."""
        line = self._lines[key]
        while line.waiters:
            turn = line.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        line.busy = False
        del self._lines[key]

    def _abandon(self, key: str, line: _Line, turn: asyncio.Future[None]) -> None:
        if turn.done() and not turn.cancelled():
            self.leave(key)  # the turn reached us as we gave up: pass it on
            return
        turn.cancel()
        line.waiters.remove(turn)
