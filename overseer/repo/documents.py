"""Reading a job file's document: YAML through the safe C loader, or JSON, fast enough for 10,000
files, and the document as JSON types (:func:`jsonable`).

It knows YAML and JSON only: which files are jobs is overseer/repo/files.py's, what a job file
must hold overseer/repo/load.py's and overseer/repo/fields.py's.
"""
from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime
from typing import Any

import yaml
from yaml.constructor import ConstructorError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_CONSTRUCTORS = {f"tag:yaml.org,2002:{name}": _LOADER.yaml_constructors[f"tag:yaml.org,2002:{name}"]
                        for name in ("null", "bool", "int", "float", "timestamp")}


MAX_NODES = 200_000   # after alias expansion: a job file is small; an alias bomb is not


_SCALAR, _MAPPING, _SEQUENCE = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_FLOAT = "tag:yaml.org,2002:float"


def _too_many(node: yaml.Node) -> ConstructorError:
    return ConstructorError(None, None, f"more than {MAX_NODES} nodes (aliases expanded)", node.start_mark)


def _construct(loader: Any, node: yaml.Node, state: list) -> Any:
    """Node graph -> Python, the common tags inline; the rest through the safe constructor.

    Faster than PyYAML's generator-based construction, and refuses a key given twice. Tags the
    safe constructor does not know (``!!python/object`` ...) raise ConstructorError there.
    Aliases are expanded (no shared objects), within ``state[0]`` nodes. ``state[1]`` turns False
    when a value is not one :func:`jsonable` leaves as it is (a date, a non-finite float, a key
    that is not text, anything the safe constructor made), so that a plain document need not be
    copied. Text scalars, most of every document, are taken inline.
    """
    state[0] -= 1
    if state[0] < 0:
        raise _too_many(node)
    kind = type(node)
    tag = node.tag
    if kind is _SCALAR:
        if tag == _STR:
            return node.value
        scalar = _SCALAR_CONSTRUCTORS.get(tag)
        if scalar is None:
            state[1] = False
            return loader.construct_object(node, deep=True)
        value = scalar(loader, node)
        if tag == _TIMESTAMP or (tag == _FLOAT and not math.isfinite(value)):
            state[1] = False
        return value
    if kind is _MAPPING and tag == _MAP:
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                state[1] = False
                return loader.construct_object(node, deep=True)
            if type(key_node) is _SCALAR and key_node.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(key_node)
                key = key_node.value
            else:
                key = _construct(loader, key_node, state)
                if type(key) is not str:
                    state[1] = False
            try:
                seen = key in result
            except TypeError:
                raise ConstructorError(None, None, "found an unhashable key", key_node.start_mark) from None
            if seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if type(value_node) is _SCALAR and value_node.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(value_node)
                result[key] = value_node.value
            else:
                result[key] = _construct(loader, value_node, state)
        return result
    if kind is _SEQUENCE and tag == _SEQ:
        items = []
        for item in node.value:
            if type(item) is _SCALAR and item.tag == _STR:
                state[0] -= 1
                if state[0] < 0:
                    raise _too_many(item)
                items.append(item.value)
            else:
                items.append(_construct(loader, item, state))
        return items
    state[1] = False
    return loader.construct_object(node, deep=True)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


class _Loader(_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader with a memo for implicit scalar tags: job files repeat the same keys.

    No path resolvers are registered (``yaml_path_resolvers`` is empty), so a plain scalar's tag
    depends on its text alone, a quoted one's, a sequence's and a mapping's on nothing, and the
    resolver's path bookkeeping is skipped.
    """

    _tags: dict[str, str] = {}

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is _SCALAR:
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) > 65536:
                    self._tags.clear()
                self._tags[value] = tag
            return tag
        if kind is _MAPPING:
            return _MAP
        if kind is _SEQUENCE:
            return _SEQ
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


def load_document(data: bytes, is_json: bool) -> tuple[Any, bool]:
    """``(document, plain)``: the document of a job file, and whether :func:`jsonable` would give
    it back unchanged (JSON types only, finite numbers, text keys).

    Raises json.JSONDecodeError, ValueError (a duplicate JSON key, bad encoding) or yaml.YAMLError.
    """
    if is_json:
        state = [0, True]

        def number(text: str) -> float:
            value = float(text)
            if not math.isfinite(value):
                state[1] = False
            return value
        doc = json.loads(data, object_pairs_hook=_unique_pairs, parse_float=number, parse_constant=number)
        return doc, state[1]
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, True
        state = [MAX_NODES, True]
        doc = _construct(loader, node, state)
        return doc, state[1]
    finally:
        loader.dispose()


def yaml_error_text(exc: yaml.YAMLError, name: str) -> str:
    """``exc`` on one line, its places (``in "<byte string>", line 2, column 1``: the parser read
    bytes, not a file) naming ``name`` instead."""
    if isinstance(exc, yaml.MarkedYAMLError):
        for attr in ("context_mark", "problem_mark"):
            mark = getattr(exc, attr, None)
            if mark is not None:
                setattr(exc, attr, yaml.Mark(name, mark.index, mark.line, mark.column, None, None))
    return " ".join(str(exc).split())


def jsonable(value: Any) -> Any:
    """A parsed document as JSON types: YAML times, dates, bytes and sets converted, keys as text."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
