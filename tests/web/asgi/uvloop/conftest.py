"""Every async test in this folder runs on uvloop (what ``uvicorn[standard]``
installs); the rest of the suite runs on the standard asyncio loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop}
