"""The async face's primitives: the few things the two faces do differently.

Every module written once (the core, the queue, the lease keeper, the stores)
imports these names from here; its generated sync twin imports the same names
from :mod:`sessionware._sync.io.primitives`, which does the same with threads.
Nothing else in the one source may touch asyncio, so that a token replacement
(``scripts/unasync.py``) is all the sync twin needs.

* :class:`Event`: a one-shot wake-up that any thread may set.
* :class:`ThreadLock`: guards state shared by the sync face's threads; the
  async face runs on one loop and needs none, so it is a no-op here (as
  httpcore's ``AsyncThreadLock``).
* :class:`Once`: concurrent callers share one run of a setup step.
* :class:`Background`: one background job (a task here, a thread there).
* :class:`Deadlines`: store-call timeouts (cancellation here, socket and busy
  timeouts there).
* :func:`sleep`, :func:`shield`, :func:`interruptible`, :func:`run_blocking`,
  :func:`run_on_thread`, :func:`time_left`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, Final, TypeVar

__all__ = ["IS_SYNC", "Background", "Deadlines", "Event", "Once", "ThreadLock",
           "call_hook", "interruptible", "run_blocking", "run_on_thread", "shield", "sleep",
           "time_left"]

T = TypeVar("T")

IS_SYNC: Final = False
"""``False`` in the async face, ``True`` in the sync one: for the rare line of
the one source that only one face has (as pymongo's ``_IS_SYNC``)."""

sleep = asyncio.sleep


def shield(operation: Callable[[], Coroutine[Any, Any, T]]) -> Awaitable[T]:
    """Run ``operation()`` to its end even if the caller is cancelled (a client
    gone away must not leak a lock). The sync face cannot be cancelled."""
    return asyncio.shield(operation())


async def interruptible(operation: Callable[[], Coroutine[Any, Any, T]],
                        interrupt: Callable[[], None], timeout: float | None) -> T:
    """Run ``operation()``; if it overruns ``timeout`` seconds or the caller is
    cancelled (the core's deadline), call ``interrupt()``, which must make the
    operation fail at once (a store closes the socket under it), and let the
    operation end before answering: with its error on a timeout, with the
    cancellation on a cancel. For a driver whose own reaction to a cancel is
    slow (psycopg asks a stalled server to cancel, for up to 10 s).

    The operation runs as a task of its own, so the caller's cancellation
    never reaches the driver mid-call."""
    task = asyncio.ensure_future(operation())
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        interrupt()
        await _ended(task)
        raise
    if not done:
        interrupt()
        await _ended(task)
    return task.result()


async def _ended(task: asyncio.Future[Any]) -> None:
    """Until an interrupted operation ended (it ends at once; a bound all the same)."""
    await asyncio.wait((task,), timeout=_INTERRUPTED_WITHIN)
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned operation must not warn
    else:
        task.cancel()


_INTERRUPTED_WITHIN = 1.0


async def run_blocking(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``function`` on ``executor``'s thread, so the loop never
    blocks; the sync face calls it on the calling thread."""
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


async def run_on_thread(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` on ``executor``'s thread and wait for it, on both
    faces: for what must not overlap that thread's own work."""
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


async def call_hook(hook: Callable[..., object], *args: Any) -> None:
    """Call an app's hook, a function or a coroutine function."""
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


def time_left() -> float | None:
    """Seconds left for the store call in progress, for a call that bounds its
    own wait (the sync face); ``None`` here, where the watchdog cuts calls off."""
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Event:
    """A one-shot wake-up: :meth:`wait` returns once :meth:`set` was called
    (from any thread or loop), or at its timeout. Made on the waiter's loop."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        loop = self._future.get_loop()
        if _running_loop() is loop:
            _resolve(self._future)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, self._future)

    def is_set(self) -> bool:
        return self._future.done()

    async def wait(self, timeout: float | None) -> bool:
        """Whether it was set. A cancelled waiter leaves the event as it is."""
        await asyncio.wait([self._future], timeout=timeout)
        return self._future.done()


class ThreadLock:
    """A lock for the sync face's threads; the async face needs none."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class Once:
    """Runs a setup step for every concurrent caller at once: they share one
    run, which a cancelled caller does not cancel. A failed run is tried again
    by the next caller."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None

    async def run(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._task = asyncio.ensure_future(step())
        await asyncio.shield(task)


class Background:
    """One background job of a component (the lease keeper's renewals): a task
    on the loop that started it. Its owner calls :meth:`start` whenever the job
    is needed and :meth:`finished` as the job's last step, both under the
    owner's :class:`ThreadLock`, so a job is never needed and gone at once."""

    __slots__ = ("_name", "_task")

    def __init__(self, name: str) -> None:
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``job()`` unless it runs already (on this loop)."""
        task, loop = self._task, asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(job(), name=self._name)

    def finished(self) -> None:
        self._task = None

    @property
    def running(self) -> bool:
        """Whether the job runs now (for tests that wait for it to end)."""
        return self._task is not None and not self._task.done()


class _Call:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False


class Deadlines:
    """Bounds store calls by ``timeout`` seconds: ``async with deadlines.bound():``
    raises TimeoutError when the block overruns.

    ``asyncio.timeout`` would create, schedule and cancel a timer per call,
    about a third of the core's own CPU per request. Here a call only
    registers its deadline in a dict; one watchdog task per loop, awake only
    while calls are in flight, cancels the overdue ones every ``timeout / 4``
    seconds. So a hung call is cut off between ``timeout`` and ``1.25 *
    timeout``, at a dict insert and delete per call.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._calls: dict[int, _Call] = {}
        self._watchdog: asyncio.Task[None] | None = None

    def bound(self) -> _Bound:
        return _Bound(self)

    def _enter(self) -> _Call:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        call = _Call(task, loop.time() + self.timeout)
        self._calls[id(call)] = call
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not loop:
            self._watchdog = loop.create_task(self._watch(), name="sessionware-deadlines")
        return call

    def _exit(self, call: _Call, exc: BaseException | None) -> None:
        del self._calls[id(call)]
        if (isinstance(exc, asyncio.CancelledError) and call.expired
                and call.task.uncancel() == 0):
            raise TimeoutError from None  # our cancellation, not the caller's

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Sleep first: a call that finished without suspending leaves no
            # call behind by the watchdog's first step.
            await asyncio.sleep(self.timeout / 4)
            if not self._calls:
                break
            now = loop.time()
            for call in list(self._calls.values()):
                if not call.expired and call.deadline <= now and call.task.get_loop() is loop:
                    call.expired = True
                    call.task.cancel()
        self._watchdog = None  # checked and cleared in one step: _enter starts a new one


class _Bound:
    __slots__ = ("_call", "_deadlines")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines
        self._call: _Call | None = None

    async def __aenter__(self) -> None:
        self._call = self._deadlines._enter()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._call is not None
        self._deadlines._exit(self._call, exc)
