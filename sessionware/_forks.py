"""Process generations: a counter that every forked child increments.

Per-process state (a store's connection, its worker thread, the WSGI loop
thread) must be rebuilt in a forked child. Comparing :func:`os.getpid` on every
operation would notice, but ``getpid`` is a system call on current glibc, paid
on the hot path of every request; comparing this counter costs nothing.
"""

from __future__ import annotations

import os

__all__ = ["generation"]

_generation = 0


def generation() -> int:
    """The number of forks between the first process and this one."""
    return _generation


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)
