"""The sync face's primitives: the same names as :mod:`sessionware._async.io.primitives`,
done with threads. Hand-written, not generated: this module and its async
counterpart are where the two faces differ.

Every lock here is fork-safe: a child process (gunicorn forks its workers
after importing the app) may inherit a lock that a parent's thread held at
the fork, and gets a fresh one instead.
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, Final, TypeVar

from sessionware._forks import generation

__all__ = ["IS_SYNC", "Background", "Deadlines", "Event", "Once", "ThreadLock",
           "call_hook", "interruptible", "run_blocking", "run_on_thread", "shield", "sleep",
           "time_left"]

T = TypeVar("T")

IS_SYNC: Final = True

sleep = time.sleep


def shield(operation: Callable[[], T]) -> T:
    """``operation()``: a thread is not cancelled."""
    return operation()


def interruptible(operation: Callable[[], T], interrupt: Callable[[], None],
                  timeout: float | None) -> T:
    """Run ``operation()``; if it overruns ``timeout`` seconds, or what is
    left of the store call in progress (:func:`time_left`), whichever is
    less, call ``interrupt()`` from another thread: it must make the blocked
    operation fail at once (a store closes the socket under it). A blocking
    call cannot be cancelled; this is how it keeps its bound."""
    left = time_left()
    if left is not None:
        timeout = left if timeout is None else min(timeout, left)
    if timeout is None:
        return operation()
    alarm = _alarms.set(timeout, interrupt)
    try:
        return operation()
    finally:
        _alarms.cancel(alarm)


class _Alarms:
    """Callbacks due at deadlines, run by one daemon thread per process that
    sleeps until the earliest (started at the first alarm; a forked child
    starts its own)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._count = itertools.count()
        self._lock = ThreadLock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = generation()

    def set(self, timeout: float, callback: Callable[[], None]) -> int:
        alarm = next(self._count)
        with self._lock:
            if self._generation != generation():  # forked: the thread is the parent's
                self._generation, self._thread = generation(), None
                self._heap, self._cancelled = [], set()
            earliest = not self._heap or time.monotonic() + timeout < self._heap[0][0]
            heapq.heappush(self._heap, (time.monotonic() + timeout, alarm, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="sessionware-alarms")
                self._thread.start()
        if earliest:
            self._wakeup.set()
        return alarm

    def cancel(self, alarm: int) -> None:
        with self._lock:
            self._cancelled.add(alarm)

    def _run(self) -> None:
        while True:
            self._wakeup.clear()  # before reading the heap: a later set() is not lost
            due: list[Callable[[], None]] = []
            with self._lock:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now
                                      or self._heap[0][1] in self._cancelled):
                    _, alarm, callback = heapq.heappop(self._heap)
                    if alarm in self._cancelled:
                        self._cancelled.discard(alarm)
                    else:
                        due.append(callback)
                wait = self._heap[0][0] - now if self._heap else None
            for callback in due:
                with contextlib.suppress(Exception):  # an interrupt must not end the thread
                    callback()
            self._wakeup.wait(wait)


def run_blocking(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """Blocking is what this face does: ``function`` runs on the calling thread."""
    return function(*args)


def run_on_thread(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` on ``executor``'s thread and wait for it: for what must
    not overlap that thread's own work."""
    return executor.submit(function, *args).result()


class Event:
    """A one-shot wake-up: :meth:`wait` returns once :meth:`set` was called, or
    at its timeout."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


class ThreadLock:
    """``threading.Lock``, replaced in a forked child."""

    __slots__ = ("_generation", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = generation()

    def __enter__(self) -> None:
        if self._generation != generation():
            self._lock, self._generation = threading.Lock(), generation()
        self._lock.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.release()


class Once:
    """Runs a setup step for concurrent callers one at a time; the step itself
    checks whether an earlier run did the work. A failed run is tried again by
    the next caller."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = ThreadLock()

    def run(self, step: Callable[[], None]) -> None:
        with self._lock:
            step()


class Background:
    """One background job of a component: a daemon thread of this process. Its
    owner calls :meth:`start` whenever the job is needed and :meth:`finished`
    as the job's last step, both under the owner's :class:`ThreadLock`."""

    __slots__ = ("_name", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None

    def start(self, job: Callable[[], None]) -> None:
        """Start ``job()`` unless it runs already (in this process: a forked
        child inherits the thread object, not the thread)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._thread = threading.Thread(target=job, name=self._name, daemon=True)
            self._thread.start()

    def finished(self) -> None:
        self._thread = None

    @property
    def running(self) -> bool:
        """Whether the job runs now (for tests that wait for it to end)."""
        return self._thread is not None and self._thread.is_alive()


_deadline = threading.local()  # .at: the monotonic deadline of this thread's store call


def call_hook(hook: Callable[..., object], *args: Any) -> None:
    """Call an app's hook: a plain function here (no loop runs it otherwise)."""
    result = hook(*args)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited: say so instead of warning about it
        raise TypeError(f"{hook!r} returned an awaitable: under WSGI hooks are plain functions")


def time_left() -> float | None:
    """Seconds left for this thread's store call in progress (``None`` outside
    one): a blocking call cannot be cancelled, so it bounds its own wait."""
    at: float | None = getattr(_deadline, "at", None)
    return None if at is None else max(at - time.monotonic(), 0.0)


class Deadlines:
    """Bounds store calls by ``timeout`` seconds: ``with deadlines.bound():``
    tells the store how long the block may take (:func:`time_left`), and the
    store sets its socket or busy timeout from it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def bound(self) -> _Bound:
        return _Bound(self.timeout)


class _Bound:
    __slots__ = ("_outer", "_timeout")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._outer: float | None = None

    def __enter__(self) -> None:
        self._outer = getattr(_deadline, "at", None)
        _deadline.at = time.monotonic() + self._timeout

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _deadline.at = self._outer


_alarms = _Alarms()
