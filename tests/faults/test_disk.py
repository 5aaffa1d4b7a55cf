"""SQLite on a disk that fills up mid-traffic (ENOSPC): requests are refused
with a clear error, nothing is half-written, service resumes once space is
freed.

The disk is a tmpfs of the test's own, a few MiB, mounted on the test's
folder (root, or passwordless sudo, as scripts/test.sh needs for apt-get;
without either the test fails and says so: a loop device needs root too, and
RLIMIT_FSIZE would make a file too large for one process rather than a disk
full for all). Filling it is a file of the test written until ENOSPC; the
database's WAL then cannot grow, and the next write fails with SQLITE_FULL.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionware.stores import SQLiteStore
from tests.faults.history import Traffic, check_outcomes, in_process, stored_ids, until

SIZE = "4m"


def _as_root(*command: str) -> None:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    done = subprocess.run([*prefix, *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed (needs root or passwordless sudo): "
                    f"{done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`SIZE` on a folder of the test's own."""
    mount = tmp_path / "disk"
    mount.mkdir()
    _as_root("mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0777", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        _as_root("umount", "-l", str(mount))


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte more fits (ENOSPC)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as output:
        for size in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    output.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


async def test_a_full_disk_refuses_requests_cleanly_and_service_resumes_once_freed(
    small_disk: Path, face: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sessionware")
    path = small_disk / "sessions.db"
    async with in_process(SQLiteStore(path), face, store_timeout=2.0,
                          lock_timeout=3.0) as (_, client, _, cookie):
        async with Traffic(client, cookie) as traffic:
            await until(lambda: traffic.count(200) >= 5, 20)
            filler = fill(small_disk)
            full_at = len(traffic.answers)
            await until(lambda: traffic.count(503, full_at) >= 5, 30)
            filler.unlink()
            freed_at = len(traffic.answers)
            await until(lambda: traffic.count(200, freed_at) >= 5, 30)
        statuses = dict(sorted(traffic.statuses().items()))
        print(f"\ndisk full sqlite {face}: {statuses}")
        full = list(traffic.answers.values())[full_at + 4:freed_at]  # sent to a full disk
        assert full and all(r.status_code == 503 for r in full), statuses
        assert "full" in caplog.text  # the log says why: "database or disk is full"
        check_outcomes(traffic.answers, await stored_ids(client, cookie))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
