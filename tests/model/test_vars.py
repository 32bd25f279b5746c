"""Var coercion: every type from JSON and from strings, and validate_params' rules."""
from __future__ import annotations

import copy
import pickle
from datetime import date, datetime, timedelta, timezone

import pytest

from overseer.exceptions import ParamError
from overseer.model.vars import MISSING, VAR_TYPES, VarSpec, coerce, parse_iso8601, text_of, validate_params


def spec(kind: str, **kw) -> VarSpec:
    return VarSpec(name="v", type=kind, **kw)


def test_missing_is_a_singleton_that_survives_copies():
    assert copy.copy(MISSING) is MISSING
    assert copy.deepcopy({"d": MISSING})["d"] is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert repr(MISSING) == "MISSING"
    assert VarSpec(name="x").default is MISSING


@pytest.mark.parametrize("kind, value, expected", [
    ("null", None, None),
    ("bool", True, True),
    ("int", 5, 5),
    ("int", 5.0, 5),
    ("float", 2, 2.0),
    ("float", 2.5, 2.5),
    ("binary", "aGVs\nbG8=", "aGVsbG8="),
    ("binary", b"hello", "aGVsbG8="),
    ("timestamp", "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z"),
    ("timestamp", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.500000Z"),
    ("timestamp", "2026-01-01 00:00", "2026-01-01T00:00:00Z"),
    ("timestamp", "2026-01-01", "2026-01-01T00:00:00Z"),
    ("timestamp", datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(hours=3))), "2026-01-01T00:00:00Z"),
    ("timestamp", date(2026, 1, 2), "2026-01-02T00:00:00Z"),
    ("pairs", [["a", 1], ("b", 2)], [["a", 1], ["b", 2]]),
    ("pairs", [{"a": 1}], [["a", 1]]),
    ("omap", {"b": 1, "a": 2}, {"b": 1, "a": 2}),
    ("omap", [("b", 1), ("a", 2)], {"b": 1, "a": 2}),
    ("map", {"k": [1, {"x": None}]}, {"k": [1, {"x": None}]}),
    ("set", ["a", "b", "a"], ["a", "b"]),
    ("set", {"b", "a"}, ["a", "b"]),
    ("seq", ("a", 1, None), ["a", 1, None]),
    ("str", "x y", "x y"),
])
def test_json_values_that_fit(kind, value, expected):
    assert coerce(spec(kind), value, from_string=False) == expected


@pytest.mark.parametrize("kind, value", [
    ("null", 0), ("null", ""),
    ("bool", 1), ("bool", "true"),
    ("int", "5"), ("int", 5.5), ("int", True),
    ("float", "2.5"), ("float", False), ("float", float("nan")),
    ("binary", "not base64!"), ("binary", 5),
    ("timestamp", "yesterday"), ("timestamp", 1700000000), ("timestamp", "2026-13-01"),
    ("pairs", [["a"]]), ("pairs", {"a": 1}),
    ("omap", [("a", 1), ("a", 2)]), ("omap", "x"),
    ("map", [1]), ("map", {1: "x"}),
    ("set", "a"), ("seq", {"a": 1}),
    ("str", 5), ("str", None), ("str", True), ("str", ["a"]),
])
def test_json_values_that_do_not_fit_name_the_var(kind, value):
    with pytest.raises(ParamError, match="var 'v'"):
        coerce(spec(kind), value, from_string=False)


@pytest.mark.parametrize("kind, text, expected", [
    ("null", "", None), ("null", "null", None),
    ("bool", "yes", True), ("bool", "Off", False), ("bool", "1", True), ("bool", "false", False),
    ("int", " -12 ", -12),
    ("float", "1e3", 1000.0),
    ("binary", "aGVsbG8=", "aGVsbG8="),
    ("timestamp", "2026-06-01T12:00:00Z", "2026-06-01T12:00:00Z"),
    ("pairs", '[["a", 1]]', [["a", 1]]),
    ("omap", '{"z": 1, "a": 2}', {"z": 1, "a": 2}),
    ("map", '{"a": [1, 2]}', {"a": [1, 2]}),
    ("seq", '["a", "b c"]', ["a", "b c"]),
    ("seq", "plain, with comma", ["plain, with comma"]),
    ("set", '["a", "a", "b"]', ["a", "b"]),
    ("str", "  spaced  ", "  spaced  "),
])
def test_strings_are_converted(kind, text, expected):
    assert coerce(spec(kind), text, from_string=True) == expected


@pytest.mark.parametrize("kind, text", [
    ("bool", "maybe"), ("int", "1.5"), ("int", "1_000"), ("int", "٣"), ("float", "inf"), ("float", "x"),
    ("null", "nothing"), ("map", "[1]"), ("map", "{bad"), ("seq", "[unclosed"), ("pairs", '{"a": 1}'),
    ("timestamp", "2026-01-01T25:00"),
])
def test_strings_that_do_not_convert_name_the_var(kind, text):
    with pytest.raises(ParamError, match="var 'v'") as info:
        coerce(spec(kind), text, from_string=True)
    assert repr(text)[:20] in str(info.value) or text[:20] in str(info.value)


def test_error_message_format():
    with pytest.raises(ParamError, match=r"^var 'n': 'abc' is not an int$"):
        coerce(VarSpec(name="n", type="int"), "abc", from_string=True)
    with pytest.raises(ParamError, match=r"^var 'p': pairs need two-item lists, not \['a'\]$"):
        coerce(VarSpec(name="p", type="pairs"), '[["a"]]', from_string=True)


def test_enum_json_keeps_type_and_strings_compare_as_text():
    e = spec("enum", values=("a", 1, True, 2.5))
    assert coerce(e, "a", False) == "a"
    assert coerce(e, 1, False) == 1
    assert coerce(e, True, False) is True
    assert coerce(e, "1", True) == 1
    assert coerce(e, "true", True) is True
    assert coerce(e, "2.5", True) == 2.5
    for bad in ("1", "b", False, 3):
        with pytest.raises(ParamError, match=r"var 'v': .* is not one of a, 1, true, 2\.5"):
            coerce(e, bad, False)


@pytest.mark.parametrize("value", ["a\0b", ["ok", "a\0b"], {"k": "\0"}, "\ud800"])
def test_text_no_command_can_carry_is_refused(value):
    kind = {str: "str", list: "seq", dict: "map"}[type(value)]
    with pytest.raises(ParamError, match="var 'v'"):
        coerce(spec(kind), value, from_string=False)


def test_every_type_is_handled():
    samples = {"null": None, "bool": False, "int": 1, "float": 1.5, "binary": "", "timestamp": "2026-01-01",
               "pairs": [], "omap": {}, "set": [], "str": "", "seq": [], "map": {}, "enum": "x"}
    assert set(samples) == set(VAR_TYPES)
    for kind, value in samples.items():
        coerce(spec(kind, values=("x",) if kind == "enum" else None), value, from_string=False)


def test_parse_iso8601_forms():
    utc = timezone.utc
    assert parse_iso8601("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=utc)
    assert parse_iso8601("2026-01-01T02:00:00+0200") == datetime(2026, 1, 1, tzinfo=utc)
    assert parse_iso8601("2026-01-01T00:00:00.123456789-01:30").microsecond == 123456
    assert parse_iso8601("2026-01-01").tzinfo is None
    with pytest.raises(ValueError):
        parse_iso8601("01/02/2026")


def test_text_of():
    assert [text_of(v) for v in (None, True, False, 3, 1.5, "s")] == ["", "true", "false", "3", "1.5", "s"]
    assert text_of({"a": ["é", 1]}) == '{"a":["é",1]}'


SPECS = (
    VarSpec(name="target", type="str"),
    VarSpec(name="count", type="int", default=3, required=False),
    VarSpec(name="tags", type="seq", required=False),
    VarSpec(name="uniq", type="set", required=False),
    VarSpec(name="mode", type="enum", values=("a", "b"), option=True, default="a", required=False),
)


def test_validate_params_fills_defaults_and_leaves_optional_vars_out():
    got = validate_params(SPECS, {"target": "x"}, from_strings=False)
    assert got == {"target": "x", "count": 3, "mode": "a"}
    assert validate_params(SPECS, {"target": "x", "count": "7"}, from_strings=True)["count"] == 7


def test_validate_params_unknown_and_missing_vars():
    with pytest.raises(ParamError, match=r"^unknown var 'nope'$"):
        validate_params(SPECS, {"target": "x", "nope": 1}, from_strings=False)
    with pytest.raises(ParamError, match=r"^missing required var 'target'$"):
        validate_params(SPECS, {}, from_strings=False)


def test_validate_params_json_keeps_its_type():
    with pytest.raises(ParamError, match="var 'count'"):
        validate_params(SPECS, {"target": "x", "count": "7"}, from_strings=False)
    with pytest.raises(ParamError, match="var 'target'"):
        validate_params(SPECS, {"target": 5}, from_strings=False)


def test_multi_valued_form_fields_only_for_seq_and_set():
    got = validate_params(SPECS, {"target": ["x"], "tags": ["a", "b"], "uniq": ["a", "a"]}, from_strings=True)
    assert got["target"] == "x" and got["tags"] == ["a", "b"] and got["uniq"] == ["a"]
    with pytest.raises(ParamError, match=r"var 'target': given 2 times"):
        validate_params(SPECS, {"target": ["x", "y"]}, from_strings=True)
    assert validate_params(SPECS, {"target": "x", "tags": "single"}, from_strings=True)["tags"] == ["single"]


def test_defaults_are_handed_out_as_copies():
    specs = (VarSpec(name="l", type="seq", default=["a"], required=False),)
    first = validate_params(specs, {}, from_strings=False)
    first["l"].append("mutated")
    assert validate_params(specs, {}, from_strings=False) == {"l": ["a"]} and specs[0].default == ["a"]
