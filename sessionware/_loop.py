"""One asyncio event loop per process, driven by the threads that wait on it.

The WSGI driver runs the async session core here: a request thread calls
:func:`run` and blocks until the coroutine finishes. It is one loop per
process, not one per thread, because the core keeps state that belongs to one
loop: the per-session waiting lines, the lease keeper's renewal task, and the
stores' connections and wake-up subscriptions.

Who runs the loop: the thread that needs it. A request thread that finds the
loop idle runs it itself for as long as its coroutine takes, so a store call
costs what it costs inside an async server: the request thread sends, sleeps
until the reply arrives, and goes on. An earlier design ran the loop on a
thread of its own and handed every call to it; each hand-over then cost two
or three thread wake-ups, about two thirds of a Flask request's CPU time on a
two-core machine (see ``benchmarks/profiling.md``).

A thread that finds the loop driven by another submits its coroutine to it
(so its I/O overlaps with the driver's), then waits until either its
coroutine is done or the loop is free, and in the latter case drives it on
itself. The driving lock is only ever held by a thread that is running the
loop, so every submitted coroutine has a driver: the current one, or the
waiter that takes over when it leaves.

Background work (lease renewals while an app runs, a subscriber's messages)
needs the loop driven when no request is in it. A daemon *tender* thread does
that: every :data:`TEND_INTERVAL` seconds while the loop has tasks, it runs
one pass of the loop if nobody else is, without waiting on anything, so a
request never queues behind it for more than one loop iteration. A loop with
no tasks has nothing to tend: the tender sleeps until a request has driven it.

Fork safety: a child process (gunicorn forks its workers after importing the
app) inherits the loop object but no thread. :func:`run` compares the process
generation (:mod:`sessionware._forks`) with the one that created the loop and,
in a new process, creates a fresh loop. The inherited loop is dropped, never
closed: its selector is shared with the parent across the fork, and closing
it would unregister the parent's file descriptors.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from sessionware._forks import generation

__all__ = ["TEND_INTERVAL", "may_block", "run"]

T = TypeVar("T")

TEND_INTERVAL = 0.05
"""Seconds between the tender's passes while the loop has tasks: the delay a
lease renewal or a late reply may see when no request drives the loop. Well
below a lease term (seconds), so renewals keep their schedule (a third of it)."""


class _SharedLoop:
    """A process's event loop and the lock held by whichever thread drives it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.generation = generation()
        self._driving = threading.Lock()
        self._waiting: set[threading.Event] = set()  # threads waiting for their turn
        self._tender_idle = False  # the tender sleeps until _nudge is set
        self._nudge = threading.Event()
        threading.Thread(target=self._tend, name="sessionware-loop-tender", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._driving.acquire(blocking=False):
            return self._drive(coroutine)
        return self._run_alongside(coroutine)

    def _drive(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run the loop on this thread until ``coroutine`` is done. The caller
        has taken the driving lock; this gives it back."""
        try:
            task = self.loop.create_task(_stopping_the_loop(coroutine))
            try:
                while not task.done():
                    self.loop.run_forever()
            except BaseException:
                task.cancel()  # interrupted (KeyboardInterrupt): it is abandoned
                raise
            return task.result()
        finally:
            self._hand_over()

    def _run_alongside(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Another thread drives the loop: join in, and take over when it leaves."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        turn = threading.Event()
        future.add_done_callback(lambda _: turn.set())
        self._waiting.add(turn)  # before trying the lock: see _hand_over
        try:
            while not future.done():
                if self._driving.acquire(blocking=False):
                    self._drive(_result_of(future))
                    break
                turn.wait()
                turn.clear()  # then look again: a set before this clear is not lost
            return future.result()
        except BaseException:
            future.cancel()
            raise
        finally:
            self._waiting.discard(turn)

    def _hand_over(self, *, by_tender: bool = False) -> None:
        """Release the loop, then wake the threads waiting for it: one of them
        drives next. A thread that joined after this look found the lock free."""
        self._driving.release()
        for turn in tuple(self._waiting):
            turn.set()
        if self._tender_idle and not by_tender:  # this drive may have left tasks (a lease)
            self._nudge.set()

    def _tend(self) -> None:
        while self.generation == generation():
            if self._tender_idle:
                self._nudge.wait()
                self._nudge.clear()
                self._tender_idle = False
            else:
                time.sleep(TEND_INTERVAL)
            if self._driving.acquire(blocking=False):
                try:
                    self.loop.call_soon(self.loop.stop)  # one pass: I/O polled, no wait
                    self.loop.run_forever()
                    # Decided while holding the loop: a driver after this sees it.
                    self._tender_idle = not asyncio.all_tasks(self.loop)
                finally:
                    self._hand_over(by_tender=True)


async def _stopping_the_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``, then stop the loop in the same turn. (``run_until_complete``
    stops it from a done-callback: one more turn of the loop per store call.)"""
    try:
        return await coroutine
    finally:
        asyncio.get_running_loop().stop()


async def _result_of(future: Any) -> None:
    """Wait, on the loop, for a coroutine submitted from another thread."""
    await asyncio.wait([asyncio.wrap_future(future)])


class _ProcessLoop:
    """The shared loop of the current process, created on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shared: _SharedLoop | None = None

    def get(self) -> _SharedLoop:
        shared = self.current()
        if shared is not None:
            return shared
        global _blocking_loop
        with self._lock:
            if self._shared is None or self._shared.generation != generation():
                self._shared = _SharedLoop()
                _blocking_loop = self._shared.loop
            return self._shared

    def current(self) -> _SharedLoop | None:
        """This process's loop if it has one yet (no loop is created)."""
        shared = self._shared
        return shared if shared is not None and shared.generation == generation() else None

    def after_fork_in_child(self) -> None:
        """A thread of the parent may have held the lock when it forked."""
        self._lock = threading.Lock()


_process_loop = _ProcessLoop()
# The loop may_block() recognizes: asked once per store command, so one
# comparison. A forked child never runs its parent's loop, so it needs no reset.
_blocking_loop: asyncio.AbstractEventLoop | None = None
os.register_at_fork(after_in_child=_process_loop.after_fork_in_child)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on this process's loop and wait for its result.

    Exceptions propagate to the caller. If the wait itself is interrupted (a
    ``KeyboardInterrupt`` in the main thread), the coroutine is cancelled.
    Not for use from a coroutine already running on that loop (it would wait
    for itself), nor from a thread that runs an event loop of its own.
    """
    if asyncio._get_running_loop() is not None:
        coroutine.close()
        raise RuntimeError("sessionware: a blocking session call was made from "
                           "a running event loop")
    return _process_loop.get().run(coroutine)


def may_block() -> bool:
    """Whether the running loop is this process's shared loop, whose driver is
    a thread that waits for the current operation anyway (a WSGI request
    thread, or the tender): a store may then do a short blocking call on it
    instead of handing the call to a thread of its own and back."""
    loop = asyncio._get_running_loop()
    return loop is not None and loop is _blocking_loop
