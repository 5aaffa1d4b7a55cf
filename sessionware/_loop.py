"""One asyncio event loop per process, on its own thread, for synchronous callers.

The WSGI driver runs the async session core here: a request thread hands a
coroutine to :func:`run` and blocks until it finishes. It is one loop per
process, not one per thread or per request, because the core keeps state that
belongs to one loop: the per-session waiting lines, the lease keeper's renewal
task, and the stores' connections and wake-up subscriptions.

Why a plain asyncio loop and not anyio's blocking portal: the core and the
stores are asyncio code (``asyncio.timeout``, futures, ``run_in_executor``), so
anyio's choice of backend buys nothing here; and a portal is a context manager
meant to bracket a block of work, while this loop lives as long as the process.
:func:`asyncio.run_coroutine_threadsafe` is the standard library's own tool for
handing coroutines to a loop on another thread.

Fork safety: a child process (gunicorn forks its workers after importing the
app) inherits the loop object but not the thread that ran it. :func:`run`
compares the process generation (:mod:`sessionware._forks`) with the one that
started the loop and, in a new process, starts a fresh loop thread. The
inherited loop is dropped, never closed: its selector is shared with the
parent across the fork, and closing it would unregister the parent's file
descriptors.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from sessionware._forks import generation

__all__ = ["run"]

T = TypeVar("T")


class _LoopThread:
    """The loop of the current process, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._generation = -1

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._generation == generation():
            return loop
        with self._lock:
            if self._loop is None or self._generation != generation():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sessionware-loop", daemon=True)
        thread.start()
        self._loop, self._thread, self._generation = loop, thread, generation()

    def in_loop_thread(self) -> bool:
        return (self._thread is threading.current_thread()
                and self._generation == generation())

    def after_fork_in_child(self) -> None:
        """A thread of the parent may have held the lock when it forked."""
        self._lock = threading.Lock()


_runner = _LoopThread()
os.register_at_fork(after_in_child=_runner.after_fork_in_child)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on this process's loop thread and wait for its result.

    Exceptions propagate to the caller. If the wait itself is interrupted (a
    ``KeyboardInterrupt`` in the main thread), the coroutine is cancelled.
    """
    if _runner.in_loop_thread():
        coroutine.close()
        raise RuntimeError("sessionware: a blocking call was made on its own loop thread")
    future = asyncio.run_coroutine_threadsafe(coroutine, _runner.loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
