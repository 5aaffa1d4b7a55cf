"""JSONSerializer: one rule of what a session may hold, on both encoders.

Every test runs with orjson and with the standard library ``json`` (the
``serializer`` fixture hides orjson for the second); the cross-path tests run
both in one example and compare them.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import re
import sys
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionware import serializers
from sessionware.exceptions import SerializationError
from sessionware.serializers import MAX_DEPTH, JSONSerializer
from sessionware.session import Session

PATHS = ["orjson", "json"]
INT_MIN = -(2**63)
INT_END = 2**64  # exclusive
ORJSON = serializers.orjson

# The fixture is constant across Hypothesis examples: it only picks the encoder.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def encoder(path: str) -> Iterator[JSONSerializer]:
    """A serializer whose calls inside the block run on ``path``."""
    if path == "orjson" and ORJSON is None:
        pytest.skip("orjson is not installed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serializers, "orjson", ORJSON if path == "orjson" else None)
        yield JSONSerializer()


@pytest.fixture(params=PATHS)
def serializer(request: pytest.FixtureRequest) -> Iterator[JSONSerializer]:
    with encoder(request.param) as chosen:
        yield chosen


def both(function: Any, *args: Any) -> dict[str, Any]:
    """``function(serializer, *args)`` on each path: its result or its exception type."""
    outcomes: dict[str, Any] = {}
    for path in PATHS:
        with encoder(path) as chosen:
            try:
                outcomes[path] = function(chosen, *args)
            except SerializationError:
                outcomes[path] = SerializationError
    return outcomes


def nested_lists(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def nested_dicts(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def self_referencing_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def self_referencing_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(enum.StrEnum):
    ALICE = "alice"


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyList(list[Any]):
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int


REFUSED_VALUES = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "uuid": uuid.UUID(int=7),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "date": datetime.date(2024, 1, 2),
    "enum": Colour.RED,
    "int-enum": Level.HIGH,
    "str-enum": Name.ALICE,
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "bytes": b"abc",
    "bytearray": bytearray(b"abc"),
    "dataclass": Point(1, 2),
    "object": object(),
    "decimal": decimal.Decimal("1.5"),
    "complex": 1j,
    "str-subclass": MyStr("x"),
    "int-subclass": MyInt(1),
    "float-subclass": MyFloat(1.5),
    "list-subclass": MyList([1]),
    "defaultdict": defaultdict(list),
    "ordereddict": OrderedDict(a=1),
    "int-key": {1: "x"},
    "bool-key": {True: "x"},
    "none-key": {None: "x"},
    "str-subclass-key": {MyStr("k"): "x"},
    "2**64": 2**64,
    "-2**63-1": -(2**63) - 1,
    "huge-int": 10**5000,
    "lone-surrogate": "\ud800",
    "lone-surrogate-key": {"\udc00": 1},
    "deep-lists": nested_lists(10_000),
    "deep-dicts": nested_dicts(10_000),
    "self-referencing-list": self_referencing_list(),
    "self-referencing-dict": self_referencing_dict(),
}


@pytest.mark.parametrize("value", REFUSED_VALUES.values(), ids=REFUSED_VALUES.keys())
def test_refused_values_raise_serialization_error_naming_the_key(
        serializer: JSONSerializer, value: Any) -> None:
    with pytest.raises(SerializationError, match=r"session\['v'\]"):
        serializer.dumps({"v": value})


@pytest.mark.parametrize("value", REFUSED_VALUES.values(), ids=REFUSED_VALUES.keys())
def test_refused_values_are_refused_deep_inside_too(
        serializer: JSONSerializer, value: Any) -> None:
    session = {"ok": 1, "cart": [1, 2, {"items": ("a", value)}]}
    with pytest.raises(SerializationError, match=r"session\['cart'\]\[2\]\['items'\]\[1\]"):
        serializer.dumps(session)


def test_message_names_the_path_the_type_and_the_rule(serializer: JSONSerializer) -> None:
    with pytest.raises(SerializationError) as refused:
        serializer.dumps({"cart": [1, 2, 3, uuid.UUID(int=1)]})
    message = str(refused.value)
    assert "session['cart'][3]" in message and "UUID" in message
    assert "00000000-0000-0000-0000-000000000001" in message


def test_message_for_a_bad_key_names_the_key_and_its_mapping(
        serializer: JSONSerializer) -> None:
    with pytest.raises(SerializationError, match=r"session\['a'\] .*key 1 \(int\)"):
        serializer.dumps({"a": {1: "x"}})
    with pytest.raises(SerializationError, match=r"^[^\[]*session has .*key 2 \(int\)"):
        serializer.dumps({2: "x"})


@pytest.mark.parametrize("value", [math.nan, 2**64], ids=["nan", "2**64"])
def test_message_names_the_refused_value(serializer: JSONSerializer, value: Any) -> None:
    with pytest.raises(SerializationError, match=re.escape(repr(value))):
        serializer.dumps({"v": value})


@pytest.mark.parametrize("make", [nested_lists, nested_dicts, lambda _: self_referencing_list()],
                         ids=["lists", "dicts", "cycle"])
def test_deep_nesting_names_the_limit(serializer: JSONSerializer, make: Any) -> None:
    with pytest.raises(SerializationError, match=f"deeper than {MAX_DEPTH} levels"):
        serializer.dumps({"v": make(10_000)})


def test_a_cycle_is_named_and_its_path_shortened(serializer: JSONSerializer) -> None:
    with pytest.raises(SerializationError) as refused:
        serializer.dumps({"v": self_referencing_list()})
    message = str(refused.value)
    assert "reference cycle" in message and "session['v'][0][0]" in message
    assert len(message) < 300


@pytest.mark.parametrize("make", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_depth_limit_counts_the_session_as_level_one(
        serializer: JSONSerializer, make: Any) -> None:
    deepest = {"v": make(MAX_DEPTH - 1)}
    assert serializer.loads(serializer.dumps(deepest)) == deepest
    with pytest.raises(SerializationError, match=str(MAX_DEPTH)):
        serializer.dumps({"v": make(MAX_DEPTH)})


ACCEPTED_VALUES = {
    "empty-str": "",
    "str": "alice",
    "non-ascii": "é ü 漢字 😀 \u2028 \x7f",
    "escapes": "\x00\x1f\n\t\"\\/",
    "zero": 0,
    "int": -42,
    "int-min": INT_MIN,
    "int-max": INT_END - 1,
    "true": True,
    "false": False,
    "none": None,
    "float": 0.1,
    "big-float": 1e100,
    "small-float": 1e-7,
    "denormal": 5e-324,
    "max-float": 1.7976931348623157e308,
    "negative-zero": -0.0,
    "empty-list": [],
    "empty-dict": {},
    "list": [1, "a", None, [2.5, {"b": False}]],
    "dict": {"a": {"b": {"c": [1, 2, 3]}}, "": 0},
}


@pytest.mark.parametrize("value", ACCEPTED_VALUES.values(), ids=ACCEPTED_VALUES.keys())
def test_accepted_values_round_trip(serializer: JSONSerializer, value: Any) -> None:
    restored = serializer.loads(serializer.dumps({"v": value}))
    assert restored == {"v": value}
    assert repr(restored) == repr({"v": value})  # -0.0 stays negative, types stay exact


def test_tuples_read_back_as_lists(serializer: JSONSerializer) -> None:
    data = {"t": (1, ("a", ()), [()])}
    assert serializer.loads(serializer.dumps(data)) == {"t": [1, ["a", []], [[]]]}


@pytest.mark.parametrize("mapping", [Session({"n": 1}), OrderedDict(n=1), defaultdict(int, n=1)],
                         ids=["Session", "OrderedDict", "defaultdict"])
def test_the_top_level_mapping_may_be_a_dict_subclass(
        serializer: JSONSerializer, mapping: dict[str, Any]) -> None:
    assert serializer.dumps(mapping) == b'{"n":1}'


@pytest.mark.parametrize("data", [[1], MappingProxyType({"n": 1}), "x", None],
                         ids=["list", "mappingproxy", "str", "none"])
def test_the_top_level_must_be_a_dict(serializer: JSONSerializer, data: Any) -> None:
    with pytest.raises(SerializationError, match="session"):
        serializer.dumps(data)


def test_output_is_compact_and_non_ascii_is_utf8(serializer: JSONSerializer) -> None:
    data = {"a": [1, 2.5, None, True], "é": "漢字😀"}
    assert serializer.dumps(data) == '{"a":[1,2.5,null,true],"é":"漢字😀"}'.encode()


@pytest.mark.parametrize(("value", "expected"), [
    (0.1, b"0.1"), (1e100, b"1e+100"), (-0.0, b"-0.0"), (1e16, b"1e+16"), (2.5, b"2.5"),
    (5e-324, b"5e-324"), (0.0001, b"0.0001"), (1.2345678901234568e17, b"1.2345678901234568e+17"),
])
def test_floats_are_written_identically(
        serializer: JSONSerializer, value: float, expected: bytes) -> None:
    assert serializer.dumps({"f": value}) == b'{"f":' + expected + b"}"


@pytest.mark.parametrize("value", [1e-5, 1.5e-6, 1e-7, 9.99e-9])
def test_small_exponent_floats_are_formatted_differently_but_read_back_the_same(
        value: float) -> None:
    # orjson writes 0.00001 and 1e-7 where Python's repr writes 1e-05 and 1e-07:
    # the one formatting difference between the encoders. Both read back exactly.
    written = both(lambda chosen: chosen.dumps({"f": value}))
    assert written["orjson"] != written["json"]  # so the two encoders did run
    for raw in written.values():
        assert both(lambda chosen, raw=raw: chosen.loads(raw)["f"]) == {p: value for p in PATHS}


def frame_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_a_nearly_exhausted_stack_still_gives_serialization_error(
        serializer: JSONSerializer) -> None:
    session = {"v": nested_lists(MAX_DEPTH - 1)}
    stored = b'{"v":' + b"[" * 200 + b"]" * 200 + b"}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frame_depth() + 60)
    try:
        with pytest.raises(SerializationError):
            serializer.dumps(session)
        with pytest.raises(SerializationError):
            serializer.loads(stored)
    finally:
        sys.setrecursionlimit(limit)


# ---- loads ------------------------------------------------------------------

REFUSED_BYTES = {
    "nan": b'{"a":NaN}',
    "infinity": b'{"a":Infinity}',
    "-infinity": b'{"a":-Infinity}',
    "overflowing-float": b'{"a":1e400}',
    "overflowing-negative-float": b'{"a":-1e400}',
    "2**64": b'{"a":18446744073709551616}',
    "-2**63-1": b'{"a":-9223372036854775809}',
    "huge-int": b'{"a":' + b"9" * 5000 + b"}",
    "deep-lists": b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "deep-dicts": b'{"a":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
    "just-over-the-limit": b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
    "between-the-limits": b'{"a":' + b"[" * 600 + b"]" * 600 + b"}",
    "list": b"[1]",
    "string": b'"s"',
    "number": b"1",
    "null": b"null",
    "invalid-utf8": b'{"a":"\xff"}',
    "invalid-utf8-key": b'{"\xc3":1}',
    "encoded-surrogate": b'{"a":"\xed\xa0\x80"}',
    "utf8-bom": b'\xef\xbb\xbf{"a":1}',
    "utf16": '{"a":1}'.encode("utf-16"),
    "utf16-le": '{"a":1}'.encode("utf-16-le"),
    "lone-high-surrogate": b'{"a":"\\ud800"}',
    "lone-low-surrogate": b'{"a":"\\udc00"}',
    "reversed-pair": b'{"a":"\\udc00\\ud800"}',
    "lone-surrogate-key": b'{"\\uD800":1}',
    "truncated": b'{"a":',
    "empty": b"",
    "trailing-garbage": b'{"a":1}x',
    "two-objects": b"{}{}",
    "trailing-comma": b'{"a":1,}',
    "single-quotes": b"{'a':1}",
    "control-character": b'{"a":"\x01"}',
    "leading-zero": b'{"a":01}',
    "plus-sign": b'{"a":+1}',
}


@pytest.mark.parametrize("raw", REFUSED_BYTES.values(), ids=REFUSED_BYTES.keys())
def test_loads_refuses_with_serialization_error(serializer: JSONSerializer, raw: bytes) -> None:
    with pytest.raises(SerializationError, match="stored session"):
        serializer.loads(raw)


ACCEPTED_BYTES = {
    "int-max": (b'{"a":18446744073709551615}', {"a": INT_END - 1}),
    "int-min": (b'{"a":-9223372036854775808}', {"a": INT_MIN}),
    "big-float": (b'{"a":18446744073709551616.0}', {"a": 1.8446744073709552e19}),
    "exponent": (b'{"a":1E2,"b":1e-400}', {"a": 100.0, "b": 0.0}),
    "long-digits-in-a-string": (b'{"a":"123456789012345678901234"}',
                                {"a": "123456789012345678901234"}),
    "surrogate-pair": (b'{"a":"\\ud83d\\ude00"}', {"a": "😀"}),
    "escaped-backslash": (b'{"a":"\\\\ud800"}', {"a": "\\ud800"}),
    "whitespace": (b' \t\r\n{ "a" : [ 1 , 2 ] } \n', {"a": [1, 2]}),
    "duplicate-key": (b'{"a":1,"a":2}', {"a": 2}),
    "at-the-limit": (b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}",
                     {"a": nested_lists(MAX_DEPTH - 1)}),
    "many-brackets-in-strings": (b'{"a":"' + b"[{" * 200 + b'"}', {"a": "[{" * 200}),
}


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED_BYTES.values(), ids=ACCEPTED_BYTES.keys())
def test_loads_accepts(serializer: JSONSerializer, raw: bytes, expected: dict[str, Any]) -> None:
    assert serializer.loads(raw) == expected


# ---- the same on both paths: Hypothesis ---------------------------------------

scalars = (st.none() | st.booleans() | st.integers(INT_MIN, INT_END - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=5)
                      | st.lists(children, max_size=3).map(tuple)
                      | st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=30,
)
sessions = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def as_read_back(value: Any) -> Any:
    """What ``value`` reads back as: tuples become lists."""
    if isinstance(value, dict):
        return {key: as_read_back(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_read_back(item) for item in value]
    return value


def has_small_exponent_float(value: Any) -> bool:
    """Whether ``value`` holds a float that orjson and json format differently."""
    if isinstance(value, dict):
        return any(has_small_exponent_float(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(has_small_exponent_float(item) for item in value)
    return isinstance(value, float) and "e-0" in repr(value)


@FIXTURE_OK
@given(session=sessions)
def test_valid_sessions_round_trip(serializer: JSONSerializer, session: dict[str, Any]) -> None:
    raw = serializer.dumps(session)
    assert serializer.loads(raw) == as_read_back(session)
    assert json.loads(raw) == as_read_back(session)


@given(session=sessions)
def test_both_paths_write_the_same_bytes(session: dict[str, Any]) -> None:
    written = both(lambda chosen: chosen.dumps(session))
    if not has_small_exponent_float(session):
        assert written["orjson"] == written["json"]
    for raw in written.values():
        assert both(lambda chosen, raw=raw: chosen.loads(raw)) == {
            path: as_read_back(session) for path in PATHS}


any_values = st.recursive(
    scalars | st.just(math.nan) | st.just(math.inf) | st.integers()
    | st.uuids() | st.datetimes() | st.sampled_from(list(Colour) + list(Level) + list(Name))
    | st.binary(max_size=3) | st.sets(st.integers(0, 3), max_size=2)
    | st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=4) | st.integers(0, 3) | st.none(),
                                        children, max_size=4)),
    max_leaves=20,
)


@given(session=st.dictionaries(st.text(max_size=4), any_values, max_size=4))
def test_both_paths_accept_and_refuse_the_same_sessions(session: dict[str, Any]) -> None:
    outcomes = both(lambda chosen: chosen.loads(chosen.dumps(session)))
    assert outcomes["orjson"] == outcomes["json"]


json_fragments = st.sampled_from([
    b"{", b"}", b"[", b"]", b",", b":", b'"a"', b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"',
    b'"\\u00e9"', b'"\\\\"', b"0", b"1", b"-", b"-0", b".5", b"1.5", b"e5", b"E-3", b"1e400",
    b"NaN", b"Infinity", b"18446744073709551615", b"18446744073709551616", b"9" * 25,
    b"-9223372036854775809", b"true", b"false", b"null", b" ", b"\n", b"\xff", b"\xc3\xa9",
    b"\x00", b'"', b"\\",
])


@given(body=st.lists(json_fragments, max_size=12).map(b"".join))
def test_both_paths_read_the_same_bytes_the_same_way(body: bytes) -> None:
    for raw in (body, b'{"k":' + body + b"}", b'{"k":[' + body + b"]}"):
        outcomes = both(lambda chosen, raw=raw: chosen.loads(raw))
        assert outcomes["orjson"] == outcomes["json"], raw


number_literals = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,4})?\Z", fullmatch=True)


@given(literal=number_literals)
def test_both_paths_read_numbers_the_same_way(literal: str) -> None:
    raw = b'{"a":' + literal.encode() + b"}"
    outcomes = both(lambda chosen: chosen.loads(raw))
    assert outcomes["orjson"] == outcomes["json"]
    assert repr(outcomes["orjson"]) == repr(outcomes["json"])  # int stays int, -0.0 stays
