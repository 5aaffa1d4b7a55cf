from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faces import FACES

# every module of tests/support/servers/ is a plugin: a store's server
# fixture is found by where it lives, with no list to keep
pytest_plugins = [f"tests.support.servers.{module.stem}"
                  for module in sorted((Path(__file__).parent / "support" / "servers").glob("*.py"))
                  if module.stem != "__init__"]


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

