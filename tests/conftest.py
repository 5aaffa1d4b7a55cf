from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.faces import FACES

pytest_plugins = ["tests.servers.redis"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faces(*names): run on these store faces only ('async', 'sync'); "
        "a test that asks for `face` runs on every face without it")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that asks for ``face``, itself or through its fixtures, runs
    once per face (see tests/faces.py)."""
    if "face" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("faces")
    faces = marker.args if marker is not None else FACES
    unknown = set(faces) - set(FACES)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown faces {unknown}")
    metafunc.parametrize("face", faces)


@pytest.fixture(autouse=True, scope="session")
def _sync_sqlite_close_after_its_sweeps() -> Iterator[None]:
    """WORKAROUND for a library bug, to delete with its fix: SyncSQLiteStore.close()
    closes the worker thread's connection from the calling thread, under a
    sweep that may be running on it, and the process crashes (SIGSEGV).
    tests/test_purge_sqlite.py::test_closing_the_sync_face_while_it_sweeps_does_not_crash
    shows it in a child process, which this fixture does not reach. Here, the
    sweeps queued before close() finish first, so that the rest of the suite
    can run."""
    from sessionware._forks import generation
    from sessionware._sync.stores.sqlite import SyncSQLiteStore

    close = SyncSQLiteStore.close

    def close_after_sweeps(self: SyncSQLiteStore) -> None:
        executor = self._executor
        if executor is not None and self._generation == generation():
            self._closed = True  # sweeps not started yet skip themselves
            with contextlib.suppress(RuntimeError):  # shut down already
                executor.submit(lambda: None).result()  # the one running ends first
        close(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SyncSQLiteStore, "close", close_after_sweeps)
        yield
