"""Job vars: their declaration (:class:`VarSpec`) and the coercion of values to a var's type.

Values posted as JSON keep their JSON type and must already fit the var; values from form
data, the CLI or the query string are strings and are converted (``from_string=True``).
Every coerced value is JSON-able: it is stored in the execution record as given back here.
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from overseer.exceptions import ParamError

log = logging.getLogger(__name__)

VAR_TYPES = ("null", "bool", "int", "float", "binary", "timestamp", "pairs", "omap", "set", "str", "seq",
             "map", "enum")

_TRUE = frozenset(("true", "yes", "on", "1", "y"))
_FALSE = frozenset(("false", "no", "off", "0", "n"))
_NULL = frozenset(("", "null", "~", "none"))
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_ISO_RE = re.compile(
    r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r"\s*(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?\s*\Z")
_MULTI_TYPES = ("seq", "set")
MAX_DEPTH = 32  # levels of lists and maps inside one var's value (the value itself is level 1)
MAX_VAR_NAME = 64  # characters of a var name (it is also an option and an environment variable's name)


class _Missing:
    """The type of :data:`MISSING`: a sentinel that survives copy, deepcopy and pickle."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __copy__(self) -> _Missing:
        return self

    def __deepcopy__(self, memo: dict) -> _Missing:
        return self

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Sentinel for "this var has no default"."""


@dataclass(frozen=True)
class VarSpec:
    """One declared var of a job."""

    name: str
    type: str = "str"
    option: bool = False
    values: tuple | None = None
    default: Any = MISSING
    required: bool = True
    description: str | None = None


def show_value(value: Any, limit: int = 60) -> str:
    """A short repr of a value for error messages."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 40:
        return "a very large integer"
    try:
        text = repr(value)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(spec: VarSpec, value: Any, what: str) -> ParamError:
    return ParamError(f"var {spec.name!r}: {show_value(value)} is not {what}")


def check_text(spec: VarSpec, value: Any) -> None:
    """Reject strings (anywhere in the value) that no command line or environment can carry."""
    if isinstance(value, str):
        if "\0" in value:
            raise ParamError(f"var {spec.name!r}: a NUL character cannot be passed to a command")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            message = f"var {spec.name!r}: {show_value(value)} is not valid unicode (lone surrogate)"
            raise ParamError(message) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(spec, key)
            check_text(spec, item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_text(spec, item)


def _json_text(spec: VarSpec, value: str, kind: type, what: str) -> Any:
    try:
        parsed = json.loads(value)
    except ValueError:
        raise _fail(spec, value, what) from None
    except RecursionError:
        raise _too_deep(spec) from None
    if not isinstance(parsed, kind):
        raise _fail(spec, value, what)
    return parsed


def _to_list(spec: VarSpec, value: Any, from_string: bool, what: str) -> list:
    if from_string and isinstance(value, str):
        if value.lstrip().startswith("["):
            return _json_text(spec, value, list, f"{what} (JSON array text)")
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _fail(spec, value, what)


def _too_deep(spec: VarSpec) -> ParamError:
    return ParamError(f"var {spec.name!r}: the value is nested deeper than {MAX_DEPTH} levels "
                      f"of lists and maps")


def _jsonable_item(spec: VarSpec, item: Any, depth: int = 1) -> Any:
    """Items inside collections: only JSON types (YAML dates and bytes are converted), at most
    ``MAX_DEPTH`` levels deep (``depth``: the level of ``item``)."""
    if item is None or isinstance(item, (str, bool, int)):
        return item
    if isinstance(item, float):
        if not math.isfinite(item):
            raise _fail(spec, item, "a finite number")
        return item
    if isinstance(item, (datetime, date)):
        return _timestamp(spec, item)
    if isinstance(item, bytes):
        return base64.b64encode(item).decode("ascii")
    if isinstance(item, (list, tuple, dict)) and depth > MAX_DEPTH:
        raise _too_deep(spec)
    if isinstance(item, (list, tuple)):
        return [_jsonable_item(spec, i, depth + 1) for i in item]
    if isinstance(item, dict):
        out = {}
        for key, val in item.items():
            if not isinstance(key, str):
                raise ParamError(f"var {spec.name!r}: map keys must be strings, not {show_value(key)}")
            out[key] = _jsonable_item(spec, val, depth + 1)
        return out
    raise _fail(spec, item, "a JSON value")


def _timestamp(spec: VarSpec, value: Any) -> str:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = parse_iso8601(value)
        except ValueError:
            raise _fail(spec, value, "an ISO 8601 timestamp") from None
    else:
        raise _fail(spec, value, "an ISO 8601 timestamp")
    try:
        return format_timestamp(moment)
    except OverflowError:  # the offset moves it out of the years 1 to 9999
        raise _fail(spec, value, "a time within the years 0001 to 9999 in UTC") from None


def parse_iso8601(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time (``Z`` or ``+HH:MM`` offsets); naive when it has none."""
    match = _ISO_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                      micro)
    if zulu:
        return moment.replace(tzinfo=timezone.utc)
    if sign:
        if int(off_m or 0) > 59:
            raise ValueError(f"{text!r} has an offset of more than 59 minutes past the hour")
        offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
        return moment.replace(tzinfo=timezone(-offset if sign == "-" else offset))
    return moment


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


def _pairs(spec: VarSpec, items: list) -> list[list]:
    out = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            item = next(iter(item.items()))
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ParamError(f"var {spec.name!r}: pairs need two-item lists, not {show_value(item)}")
        out.append([_jsonable_item(spec, item[0], 3), _jsonable_item(spec, item[1], 3)])
    return out


def _mapping(spec: VarSpec, value: Any, from_string: bool, ordered: bool) -> dict:
    what = "an ordered map" if ordered else "a map"
    if from_string and isinstance(value, str):
        value = _json_text(spec, value, dict, f"{what} (JSON object text)")
    if ordered and isinstance(value, (list, tuple)):
        pairs = _pairs(spec, list(value))
        keys = [key for key, _ in pairs]
        if len(set(map(json.dumps, keys))) != len(keys):
            raise ParamError(f"var {spec.name!r}: duplicate key in ordered map")
        value = {}
        for key, val in pairs:
            if not isinstance(key, str):
                raise ParamError(f"var {spec.name!r}: map keys must be strings, not {show_value(key)}")
            value[key] = val
    if not isinstance(value, dict):
        raise _fail(spec, value, what)
    return _jsonable_item(spec, value)


def _dedupe(items: list) -> list:
    seen: set[str] = set()
    out = []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _enum(spec: VarSpec, value: Any, from_string: bool) -> Any:
    values = spec.values or ()
    for allowed in values:
        if from_string and isinstance(value, str):
            if value == text_of(allowed):
                return allowed
        elif type(value) is type(allowed) and value == allowed:
            return allowed
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and isinstance(allowed, (int, float)) and not isinstance(allowed, bool) and value == allowed:
            return allowed
    shown = ", ".join(text_of(v) for v in values)
    raise ParamError(f"var {spec.name!r}: {show_value(value)} is not one of {shown}")


def text_of(value: Any) -> str:
    """The text form of a value for the environment and for argv: JSON for lists and maps."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def coerce(spec: VarSpec, value: Any, from_string: bool) -> Any:
    """Return ``value`` converted to the type of ``spec`` as a JSON-able value, or raise ParamError."""
    kind = spec.type
    if kind == "str":
        if not isinstance(value, str):
            raise _fail(spec, value, "a str")
        check_text(spec, value)
        return value
    if kind == "null":
        if value is None or (from_string and isinstance(value, str) and value.strip().lower() in _NULL):
            return None
        raise _fail(spec, value, "null")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        raise _fail(spec, value, "a bool (true/false, yes/no, on/off, 1/0)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if from_string and isinstance(value, str) and _INT_RE.match(value.strip()):
            try:
                return int(value.strip())
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                raise _fail(spec, value, f"an int of at most {sys.get_int_max_str_digits()} digits") from None
        raise _fail(spec, value, "an int")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise _fail(spec, value, "a finite float") from None
        elif from_string and isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _fail(spec, value, "a float") from None
        else:
            raise _fail(spec, value, "a float")
        if not math.isfinite(number):
            raise _fail(spec, value, "a finite float")
        return number
    if kind == "binary":
        if isinstance(value, (bytes, bytearray)):
            return base64.b64encode(bytes(value)).decode("ascii")
        if isinstance(value, str):
            text = "".join(value.split())
            try:
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise _fail(spec, value, "base64 text") from None
            return text
        raise _fail(spec, value, "base64 text")
    if kind == "timestamp":
        if not isinstance(value, (str, datetime, date)):
            raise _fail(spec, value, "an ISO 8601 timestamp")
        return _timestamp(spec, value)
    if kind == "pairs":
        pairs = _pairs(spec, _to_list(spec, value, from_string, "a list of pairs"))
        check_text(spec, pairs)
        return pairs
    if kind in ("omap", "map"):
        mapping = _mapping(spec, value, from_string, ordered=kind == "omap")
        check_text(spec, mapping)
        return mapping
    if kind in ("seq", "set"):
        if kind == "set" and isinstance(value, (set, frozenset)):
            items = sorted(value, key=lambda v: json.dumps(_jsonable_item(spec, v, 2), sort_keys=True))
        else:
            items = _to_list(spec, value, from_string, "a list")
        items = [_jsonable_item(spec, item, 2) for item in items]
        check_text(spec, items)
        return _dedupe(items) if kind == "set" else items
    if kind == "enum":
        return _enum(spec, value, from_string)
    raise ParamError(f"var {spec.name!r}: unknown type {kind!r}")


def validate_params(specs: Sequence[VarSpec], raw: Mapping[str, Any], from_strings: bool) -> dict[str, Any]:
    """Check and convert the var values of one trigger; fill in defaults.

    Unknown vars and missing required vars are errors. An optional var without a default that
    was not given is absent from the result. With ``from_strings`` (form data, CLI), a list of
    strings (a multi-valued field) is accepted for ``seq`` and ``set`` vars only.
    """
    by_name = {spec.name: spec for spec in specs}
    for name in raw:
        if name not in by_name:
            raise ParamError(f"unknown var {show_value(name)}")
    params: dict[str, Any] = {}
    for spec in specs:
        if spec.name in raw:
            value = raw[spec.name]
            if from_strings and isinstance(value, (list, tuple)):
                if spec.type in _MULTI_TYPES:
                    if not all(isinstance(item, str) for item in value):
                        raise _fail(spec, value, "a list of strings")
                    value = list(value)
                    check_text(spec, value)
                    params[spec.name] = _dedupe(value) if spec.type == "set" else value
                    continue
                if len(value) != 1:
                    raise ParamError(f"var {spec.name!r}: given {len(value)} times, but it takes one value")
                value = value[0]
            params[spec.name] = coerce(spec, value, from_strings)
        elif spec.default is not MISSING:
            default = spec.default
            params[spec.name] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
        elif spec.required:
            raise ParamError(f"missing required var {spec.name!r}")
    return params
