"""The public surface: complete, sorted, documented, and light to import."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import sessionware
import sessionware.stores


@pytest.mark.parametrize("module", [sessionware, sessionware.stores])
def test_all_is_sorted_and_complete(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("name", [n for n in sessionware.__all__ if not n.startswith("_")])
def test_public_names_are_documented(name: str) -> None:
    obj = getattr(sessionware, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_optional_drivers_are_not_imported_by_the_package() -> None:
    code = ("import sys, sessionware, sessionware.stores; "
            "print(sorted(m for m in ('redis', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
