"""What a forked child inherits, and must leave alone: gunicorn ``--preload``
imports the app (and may set its store up) in the master, then forks the
workers; ``multiprocessing`` forks too.

A fork copies the parent's memory, locks as they were, and only the thread
that forked. Each scenario that needs a parent in a given state at the fork
(a thread inside a write transaction, say) runs in a child Python process of
its own, so that this process never forks while its own threads run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

from sessionware.stores import Lease, SQLiteStore, Store, SyncStore
from tests.support.faces import sync_face

RUN_LIMIT = 60.0


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=RUN_LIMIT, check=False)


# A parent whose worker thread holds a per-thread resource (as a store's sweep
# thread holds its connection) forks; the child leaves at once. Prints what
# was closed, in either process, by the time the child is gone.
_FORK_WITH_A_THREADS_RESOURCE = """
import os, threading
from sessionware._perthread import PerThread

read_end, write_end = os.pipe()
resources = PerThread(lambda name: os.write(write_end, name + b"\\n"))
resources.get(lambda: b"main")
ready, done = threading.Event(), threading.Event()

def worker():
    resources.get(lambda: b"worker")
    ready.set()
    done.wait(10)

thread = threading.Thread(target=worker)
thread.start()
assert ready.wait(10)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
os.set_blocking(read_end, False)
try:
    closed = os.read(read_end, 100)
except BlockingIOError:
    closed = b""
print(repr(closed), flush=True)
done.set()
thread.join()
"""


def test_a_forked_child_never_closes_its_parents_resources() -> None:
    """Closing a parent's connection in the child can disturb the parent (SQLite
    may checkpoint and remove the WAL), and blocks for ever if one of the
    parent's threads was using it at the fork (its mutex is copied locked).
    The threads that did not survive the fork drop their thread-locals in the
    child too: that must not close what they held."""
    result = run(_FORK_WITH_A_THREADS_RESOURCE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "b''\n"


# gunicorn --preload: the master sets the store up, which starts the first
# sweep on the store's worker thread; the master forks a worker while that
# sweep is inside its write transaction (it ends by itself soon after). The
# worker then writes. Exit status 0: it wrote; 1: it failed (printed); 2: hung.
_FORK_DURING_A_SWEEP = """
import os, sqlite3, sys, threading, time
from sessionware.stores import SyncSQLiteStore

path = sys.argv[1]
in_sweep, resume = threading.Event(), threading.Event()
connect = sqlite3.connect

def traced(*args, **kwargs):
    db = connect(*args, **kwargs)
    def trace(sql):
        if "expires_at <=" in sql and threading.current_thread().name.startswith(
                "sessionware-sqlite"):
            in_sweep.set()
            resume.wait(10)
    db.set_trace_callback(trace)
    return db

sqlite3.connect = traced
store = SyncSQLiteStore(path, busy_timeout=1.0)
store.setup()  # the first operation starts a sweep
assert in_sweep.wait(10), "no sweep started"  # inside its write transaction now
threading.Timer(0.5, resume.set).start()  # it ends by itself soon
pid = os.fork()  # the worker: whenever the fork happens
if pid == 0:
    sqlite3.connect = connect
    try:
        os._exit(0 if store.create("k" * 64, b"v0", ttl=60) else 3)
    except BaseException as exc:
        print(f"the worker could not write: {exc!r}", flush=True)
        os._exit(1)
deadline = time.monotonic() + 10  # it needs a second or two
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
print("the worker hung", flush=True)
sys.exit(2)
"""


def test_a_worker_forked_while_the_master_sweeps_can_write(tmp_path: Path) -> None:
    """SQLite keeps a process's locks in its own memory, which the child
    copies: a child forked while a parent's thread holds the write lock sees
    it held for ever (and a parent's connection, closed in the child, hangs
    it). So the store must not be forked inside a write transaction."""
    result = run(_FORK_DURING_A_SWEEP, str(tmp_path / "sessions.db"))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


# -- a store used before the fork (multiprocessing) ---------------------------------

async def _use_async(store: Store, key: str) -> bytes | None:
    lease = await store.acquire(key, lease_ttl=30.0)
    assert isinstance(lease, Lease)
    await store.commit(lease, b"from the child", ttl=60.0)
    return await store.read(key)


def _use_sync(store: SyncStore, key: str) -> bytes | None:
    lease = store.acquire(key, lease_ttl=30.0)
    assert isinstance(lease, Lease)
    store.commit(lease, b"from the child", ttl=60.0)
    return store.read(key)


def _use_inherited_store(store: Store | SyncStore, key: str, results: Any) -> None:
    if isinstance(store, SyncStore):
        results.put(_use_sync(store, key))
    else:
        results.put(asyncio.run(asyncio.wait_for(_use_async(store, key), 10)))


def test_a_store_used_before_a_fork_works_in_the_child(tmp_path: Path, face: str) -> None:
    """gunicorn without --preload of the store: the worker inherits a store the
    master already used; its worker thread did not survive the fork."""
    key = "k" * 64
    store: Store | SyncStore = SQLiteStore(tmp_path / "fork.db")
    if face == "sync":
        store = sync_face(store)
        store.setup()
        assert store.create(key, b"from the parent", ttl=60.0)
    else:
        asyncio.run(store.setup())
        assert asyncio.run(store.create(key, b"from the parent", ttl=60.0))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_use_inherited_store, args=(store, key, results))
    child.start()
    child.join(20)
    if child.is_alive():  # hung: never leave it behind
        child.kill()
        child.join(5)
    assert child.exitcode == 0
    assert results.get(timeout=1) == b"from the child"
    if isinstance(store, SyncStore):
        assert store.read(key) == b"from the child"
        store.close()
    else:
        assert asyncio.run(store.read(key)) == b"from the child"
        asyncio.run(store.aclose())
