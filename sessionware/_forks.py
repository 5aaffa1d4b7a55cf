"""Process generations: a counter that every forked child increments.

Per-process state (a store's connection, its worker thread, the WSGI loop
thread) must be rebuilt in a forked child. Comparing :func:`os.getpid` on every
operation would notice, but ``getpid`` is a system call on current glibc, paid
on the hot path of every request; comparing this counter costs nothing.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["ForkGate", "generation"]

_generation = 0


def generation() -> int:
    """The number of forks between the first process and this one."""
    return _generation


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


FORK_WAIT = 5.0
"""The longest a fork waits for the calls in flight (a hung call must not hang
every fork after it)."""


class ForkGate:
    """Keeps a fork out of the calls that must not be copied half-way.

    A fork copies only the forking thread, and every lock as it was: a child
    forked while another thread is inside a SQLite call inherits SQLite's
    in-process lock state (and mutexes) of that call for ever. Calls pass
    through the gate (:meth:`enter` and :meth:`leave`, many at once); a fork
    waits until none is in flight and keeps new ones out until it is done.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._calls = 0
        self._forking = False
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork,
                            after_in_child=self._in_child)

    def enter(self) -> None:
        with self._condition:
            while self._forking:
                self._condition.wait()
            self._calls += 1

    def leave(self) -> None:
        with self._condition:
            self._calls -= 1
            if not self._calls and self._forking:
                self._condition.notify_all()

    def _before_fork(self) -> None:
        self._condition.acquire()  # held across the fork: no call starts
        self._forking = True
        deadline = time.monotonic() + FORK_WAIT
        while self._calls and (left := deadline - time.monotonic()) > 0:
            self._condition.wait(left)

    def _after_fork(self) -> None:
        self._forking = False
        self._condition.notify_all()
        self._condition.release()

    def _in_child(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._calls, self._forking = 0, False
