"""Serializers turn the session mapping into bytes for the store and back.

JSON by default: it holds what sessions should hold (strings, numbers, booleans,
None, lists and string-keyed objects), it is readable in the store, and unlike
pickle it cannot run code when a store is compromised. orjson is used when it is
installed (``pip install sessionware[fast]``); the standard library otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from sessionware.exceptions import SerializationError

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None  # type: ignore[assignment]

# orjson would write datetimes and dataclasses as strings and objects that read
# back as something else; passing them through makes them fail as with json.
_ORJSON_OPTIONS = 0 if orjson is None else (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)

__all__ = ["JSONSerializer", "Serializer"]


class Serializer(Protocol):
    """What the core needs from a serializer. Both methods raise
    :class:`~sessionware.SerializationError` on failure, never anything else."""

    def dumps(self, data: Mapping[str, Any]) -> bytes: ...

    def loads(self, raw: bytes) -> dict[str, Any]: ...


class JSONSerializer:
    """Compact JSON; orjson when available. Non-finite floats are refused rather
    than written as something that does not read back the same."""

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        try:
            if orjson is not None:
                return orjson.dumps(data, option=_ORJSON_OPTIONS)
            return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"session cannot be stored as JSON: {exc}") from exc

    def loads(self, raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw) if orjson is not None else json.loads(raw)
        except ValueError as exc:
            raise SerializationError(f"stored session is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SerializationError("stored session is not a JSON object")
        return data
