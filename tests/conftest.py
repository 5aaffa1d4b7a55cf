from __future__ import annotations

import pytest

from tests.support.faces import FACES

pytest_plugins = ["tests.support.servers.redis", "tests.support.servers.postgres",
                  "tests.support.servers.azurite", "tests.support.servers.mongodb",
                  "tests.support.servers.dynamodb"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faces(*names): run on these store faces only ('async', 'sync'); "
        "a test that asks for `face` runs on every face without it")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that asks for ``face``, itself or through its fixtures, runs
    once per face (see tests/support/faces.py)."""
    if "face" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("faces")
    faces = marker.args if marker is not None else FACES
    unknown = set(faces) - set(FACES)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown faces {unknown}")
    metafunc.parametrize("face", faces)

