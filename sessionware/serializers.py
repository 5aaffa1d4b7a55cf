"""Serializers turn the session mapping into bytes for the store and back.

JSON by default: it holds what sessions should hold, it is readable in the
store, and unlike pickle it cannot run code when a store is compromised. orjson
is used when it is installed (``pip install sessionware[fast]``); the standard
library otherwise. Both accept and refuse exactly the same sessions and bytes:
see :class:`JSONSerializer` for the rule.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterator, Mapping
from math import isfinite
from typing import Any, NoReturn, Protocol

from sessionware.exceptions import SerializationError

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None  # type: ignore[assignment]

__all__ = ["JSONSerializer", "Serializer"]

MAX_DEPTH = 128
"""Deepest nesting a session may have, the session itself being level 1: well
within what both encoders handle (orjson writes 254 levels and reads 1024)."""

_INT_MIN = -(2**63)
_INT_END = 2**64  # exclusive; with _INT_MIN, the integers orjson can write
_INT_RANGE = "-2**63 to 2**64 - 1"
_PLAIN = frozenset({str, bool, type(None)})  # values that need no check
_ALLOWED = "dict, list, tuple, str, int, float, bool or None"
_TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels"
_CYCLE_HINT = " (or holds a reference cycle)"
_PATH_SHOWN = 8  # keys shown in a message before the rest becomes [...]
_BITS_SHOWN = 128  # larger integers are described by their size
# Stored bytes are walked like a session only if they may break the rule in a
# way the decoders let through: more than MAX_DEPTH brackets, or a run of 19
# digits, the shortest integer outside the 64-bit range (orjson reads those as
# floats). One translate finds both: digits become "0" and "{" becomes "[".
_SCAN = bytes.maketrans(b"123456789{", b"000000000[")
_LONG_DIGITS = b"0" * 19
_SHORTEST_TOO_DEEP = 2 * (MAX_DEPTH + 1)  # bytes: each level opens and closes a bracket

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60

_JSON_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    check_circular=False,  # the check bounds the depth, so a cycle cannot get here
)


class Serializer(Protocol):
    """What the core needs from a serializer. Both methods raise
    :class:`~sessionware.SerializationError` on failure, never anything else."""

    def dumps(self, data: Mapping[str, Any]) -> bytes: ...

    def loads(self, raw: bytes) -> dict[str, Any]: ...


class JSONSerializer:
    """Compact UTF-8 JSON; orjson when available, the same bytes otherwise.

    A session may hold exactly these types, and no subclasses of them (no
    enums, no ``defaultdict``): ``dict`` with ``str`` keys, ``list``, ``tuple``
    (read back as a list), ``str``, ``int`` from -2**63 to 2**64 - 1, ``bool``,
    finite ``float`` and ``None``, nested at most :data:`MAX_DEPTH` levels. Only
    the session itself may be a subclass of ``dict``. Anything else (NaN, UUID,
    datetime, set, bytes, a dataclass, an unpaired surrogate, a reference
    cycle...) raises :class:`~sessionware.SerializationError` naming where it
    is, such as ``session['cart'][3]``. ``loads`` refuses stored bytes that
    ``dumps`` could not have written in the same way.

    The encoders differ in one respect only: floats with a one-digit negative
    exponent are written ``0.00001`` and ``1e-7`` by orjson but ``1e-05`` and
    ``1e-07`` by the standard library; both read back as the same float.
    """

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        _check_session(data)
        try:
            if orjson is not None:
                return orjson.dumps(data)
            return _JSON_ENCODER.encode(data).encode()
        except (TypeError, ValueError) as exc:  # once checked, only unpaired surrogates
            raise SerializationError(_unencodable(data, exc)) from exc

    def loads(self, raw: bytes) -> dict[str, Any]:
        try:
            data = _decode(raw)
        except RecursionError as exc:  # the standard library's decoder, nesting deeply
            raise SerializationError(f"stored session {_TOO_DEEP}") from exc
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"stored session is not valid JSON: {exc}") from exc
        if type(data) is not dict:
            raise SerializationError("stored session is not a JSON object")
        return data


# ---- the check: one walk in Python, before either encoder runs -----------------

class _Refused(Exception):
    """A value breaks the rule. The containers it is in add their keys to
    ``path`` (innermost first) as it unwinds, so finding it costs nothing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[object] = []

    def where(self) -> str:
        steps = [f"[{step!r}]" for step in reversed(self.path)]
        if len(steps) > _PATH_SHOWN:
            steps[_PATH_SHOWN:] = ["[...]"]
        return "session" + "".join(steps)


def _check_session(data: object) -> None:
    if not isinstance(data, dict):
        raise SerializationError(
            f"session cannot be stored as JSON: it must be a dict, not {_describe(data)}")
    try:
        _check_dict(data, 1)
    except _Refused as refused:
        hint = _CYCLE_HINT if refused.reason == _TOO_DEEP else ""
        raise SerializationError(f"session cannot be stored as JSON: "
                                 f"{refused.where()} {refused.reason}{hint}") from None
    except RecursionError as exc:  # the caller's own stack was nearly exhausted
        raise SerializationError("session cannot be checked: the stack is exhausted") from exc


def _check_stored(data: object) -> None:
    if type(data) is not dict:
        return  # refused by the caller
    try:
        _check_dict(data, 1)
    except _Refused as refused:
        raise SerializationError(
            f"stored session cannot be read: {refused.where()} {refused.reason}") from None


def _check_dict(mapping: dict[Any, Any], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    for key, item in mapping.items():
        if type(key) is not str:
            raise _Refused(f"has the key {_describe(key)}: keys must be str")
        kind = type(item)  # the two commonest cases inline: this runs for every value
        if kind in _PLAIN or (kind is int and _INT_MIN <= item < _INT_END):
            continue
        try:
            _check_item(item, depth)
        except _Refused as refused:
            refused.path.append(key)
            raise


def _check_array(items: list[Any] | tuple[Any, ...], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    for index, item in enumerate(items):
        kind = type(item)
        if kind in _PLAIN or (kind is int and _INT_MIN <= item < _INT_END):
            continue
        try:
            _check_item(item, depth)
        except _Refused as refused:
            refused.path.append(index)
            raise


def _check_item(item: Any, depth: int) -> None:
    """Check a value found in a container at ``depth``."""
    kind = type(item)
    if kind is int:
        if not _INT_MIN <= item < _INT_END:
            raise _Refused(f"holds the integer {_describe(item)}, outside {_INT_RANGE}")
    elif kind is float:
        if not isfinite(item):
            raise _Refused(f"holds the float {item!r}: only finite floats are stored")
    elif kind is dict:
        _check_dict(item, depth + 1)
    elif kind is list or kind is tuple:
        _check_array(item, depth + 1)
    else:
        raise _Refused(f"holds {_describe(item)}, which is not exactly a {_ALLOWED}")


def _describe(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > _BITS_SHOWN:
        return f"an integer of {value.bit_length()} bits"
    return f"{_REPR.repr(value)} ({type(value).__qualname__})"


def _unencodable(data: Mapping[str, Any], exc: Exception) -> str:
    """The message for a checked session that an encoder still refused."""
    for path, text in _strings(data):
        try:
            text.encode()
        except UnicodeEncodeError:
            refused = _Refused(f"holds the string {_REPR.repr(text)}, which has an "
                               "unpaired surrogate and so is not valid Unicode")
            refused.path = path[::-1]
            return f"session cannot be stored as JSON: {refused.where()} {refused.reason}"
    return f"session cannot be stored as JSON: {exc}"  # pragma: no cover - not known to happen


def _strings(value: Any) -> Iterator[tuple[list[object], str]]:
    """Every key and str in ``value`` with the path (outermost first) of its container,
    or of itself for a str that is a value."""
    if type(value) is str:
        yield [], value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield [], key
            for path, text in _strings(item):
                yield [key, *path], text
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            for path, text in _strings(item):
                yield [index, *path], text


# ---- reading: the standard library made as strict as orjson --------------------

def _finite_float(text: str) -> float:
    value = float(text)
    if not isfinite(value):
        raise ValueError(f"number {text[:40]} is too large for a float")
    return value


def _no_constant(text: str) -> NoReturn:
    raise ValueError(f"{text} is not JSON")


_JSON_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _decode_json(raw: bytes) -> Any:
    text = str(raw, "utf-8")  # strict UTF-8, as orjson: no BOM, UTF-16 or surrogates
    data = _JSON_DECODER.decode(text)
    if "\\ud" in text or "\\uD" in text:  # an escaped surrogate, maybe unpaired
        _JSON_ENCODER.encode(data).encode()  # UnicodeEncodeError if so; orjson refuses it
    return data


def _decode(raw: bytes) -> Any:
    data = orjson.loads(raw) if orjson is not None else _decode_json(raw)
    scan = raw.translate(_SCAN)
    long_digits = scan.find(_LONG_DIGITS) >= 0  # find: faster than "in" on bytes
    if long_digits and orjson is not None:
        data = _decode_json(raw)  # exact integers, for the check to see
    if long_digits or (len(raw) >= _SHORTEST_TOO_DEEP and scan.count(b"[") > MAX_DEPTH):
        _check_stored(data)
    return data
