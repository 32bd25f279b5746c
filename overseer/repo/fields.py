"""The checks of a job file's keys (SPEC §4): vars, schedule, hooks, env, command and script, each
turning what the document holds into the value a ``Job`` keeps, or raising JobDefinitionError with
a message that names the key, var or value at fault.

A job file as a whole, and the loading of a repository or a tree, are overseer/repo/load.py; the
``Job`` itself is overseer/model/job.py.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional
from urllib.parse import urlparse, urlsplit

from overseer.exceptions import JobDefinitionError, ParamError
from overseer.model import sandbox, templates
from overseer.model.executions import EVENT_NAME
from overseer.model.schedule import ScheduleEntry
from overseer.model.schedule_parse import parse_entry
from overseer.model.vars import MAX_VAR_NAME, MISSING, VAR_TYPES, VarSpec, coerce, show_value
from overseer.repo.documents import jsonable
from overseer.repo.tree import Tree

VAR_KEYS = ("name", "type", "option", "values", "default", "required", "description")
_VAR_KEY_SET = frozenset(VAR_KEYS)
VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RESERVED_ENV_PREFIX = "OVERSEER_"
_TEMPLATE_GLOBALS = sandbox.template_globals()


def definition_error(message: str) -> JobDefinitionError:
    return JobDefinitionError(message)


def unknown_key(key: Any, allowed: tuple[str, ...], where: str = "") -> JobDefinitionError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    return definition_error(f"{where}unknown key {key!r}{hint}")


def script_field(root: Path, script: Any) -> str:
    """The ``script:`` path checked against a working tree at ``root``: relative to ``scripts/``
    (a leading ``scripts/`` is taken as written when only that reading exists), inside it after
    symlinks, a regular executable file. Returns it normalised; raises naming what is wrong."""
    base = Path(root)

    def kind(target: str) -> Optional[tuple[bool, bool]]:
        try:
            mode = os.stat(target).st_mode
        except OSError:
            return None
        return stat.S_ISREG(mode), bool(mode & 0o111)
    return _script(script, lambda rel: (base / rel).exists(), lambda rel: os.path.realpath(base / rel), kind)


def tree_script_field(tree: Tree, script: Any) -> str:
    """:func:`script_field` asked of ``tree`` (its snapshot root as ``root``): the same checks in the
    same order, with the same messages. ``Path(root) / rel`` is pathlib's join, which drops empty
    and ``.`` parts: ``_joined`` does the same."""
    def kind(target: str) -> Optional[tuple[bool, bool]]:
        found, _error = tree.resolve(tree.relative(target))
        if found is None:
            return None
        return (True, bool(found[2])) if found[0] == "file" else (False, False)
    return _script(script, lambda rel: tree.exists(_joined(rel)), lambda rel: tree.realpath(_joined(rel)),
                   kind)


def _script(script: Any, exists: Callable[[str], bool], realpath: Callable[[str], str],
            kind: Callable[[str], Optional[tuple[bool, bool]]]) -> str:
    """The checks of both: ``exists`` and ``realpath`` of a path relative to the root, ``kind`` of
    a real path (``(regular file, executable)``, None when missing)."""
    if not isinstance(script, str) or not script.strip() or "\0" in script:
        raise definition_error(f"script: {script!r} is not a path")
    if os.path.isabs(script):
        raise definition_error(f"script: {script!r} must be a path relative to scripts/")
    rel = script
    if rel.startswith("scripts/") and not exists(f"scripts/{rel}") and exists(rel):
        rel = rel[len("scripts/"):]
    real_scripts = realpath("scripts")
    target = realpath(f"scripts/{rel}")
    if os.path.commonpath([real_scripts, target]) != real_scripts or target == real_scripts:
        raise definition_error(f"script: {script!r} is outside scripts/")
    found = kind(target)
    if found is None:
        raise definition_error(f"script: {script!r} does not exist under scripts/")
    if not found[0]:
        raise definition_error(f"script: {script!r} is not a regular file")
    if not found[1]:
        raise definition_error(f"script: {script!r} is not executable (git update-index --chmod=+x)")
    return Path(os.path.normpath(rel)).as_posix()


def _joined(*parts: str) -> str:
    return "/".join(p for part in parts for p in part.split("/") if p and p != ".")


def positive_field(key: str, value: Any, integer: bool) -> Any:
    kind = "a positive integer" if integer else "a positive number of seconds"
    number_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    try:
        finite = number_ok and math.isfinite(value) and (integer or math.isfinite(float(value)))
    except OverflowError:
        finite = False
    if isinstance(value, bool) or not finite or value <= 0:
        raise definition_error(f"{key}: {show_value(value)} is not {kind}")
    return value


_VARS: dict[tuple[int, str], VarSpec] = {}   # (index, repr of the declaration) -> its VarSpec


def _var(index: int, raw: Any) -> VarSpec:
    """``_parse_var``, once per distinct declaration: large repositories repeat the same vars. The
    key is the declaration's ``repr``, which tells ``1``, ``1.0`` and ``True`` apart, and lists
    and maps too, for every type a job file's parse gives (and costs less than building a key)."""
    if not isinstance(raw, dict):
        return _parse_var(index, raw)
    key = (index, repr(raw))
    spec = _VARS.get(key)
    if spec is None:
        spec = _parse_var(index, raw)
        if len(_VARS) >= 16384:
            _VARS.clear()
        _VARS[key] = spec
    return spec


def _parse_var(index: int, raw: Any) -> VarSpec:
    if not isinstance(raw, dict):
        raise definition_error(f"vars[{index}]: must be a mapping with a name, not {raw!r}")
    name = raw.get("name")
    where = f"vars[{index}] ({name}): " if isinstance(name, str) else f"vars[{index}]: "
    for key in raw:
        if key not in _VAR_KEY_SET:
            raise unknown_key(key, VAR_KEYS, where)
    if not isinstance(name, str) or not VAR_NAME_RE.match(name):
        raise definition_error(f"{where}name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
    if len(name) > MAX_VAR_NAME:
        raise definition_error(f"vars[{index}]: name {name[:40]!r}... is {len(name)} characters long; "
                               f"var names are limited to {MAX_VAR_NAME}")
    if name in _TEMPLATE_GLOBALS:
        raise definition_error(f"{where}name {name!r} is taken by a template function")
    kind = raw.get("type", "str")
    if kind is None:
        kind = "null"   # YAML reads an unquoted `type: null` as a null value
    if kind not in VAR_TYPES:
        raise definition_error(f"{where}type {kind!r} is not one of {', '.join(VAR_TYPES)}")
    option = raw.get("option", False)
    if not isinstance(option, bool):
        raise definition_error(f"{where}option must be true or false, not {option!r}")
    values = raw.get("values")
    if kind == "enum":
        if not isinstance(values, list) or not values:
            raise definition_error(f"{where}values must be a list for type enum")
        for value in values:
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise definition_error(f"{where}enum value {value!r} is not a scalar")
        if len({json.dumps(jsonable(v)) for v in values}) != len(values):
            raise definition_error(f"{where}values repeat an entry")
        values = tuple(jsonable(v) for v in values)
    elif values is not None:
        raise definition_error(f"{where}values are only for type enum, not {kind}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise definition_error(f"{where}description must be text")
    default = raw.get("default", MISSING)
    if default is None and kind != "null":
        default = MISSING   # `default: null` (or empty): optional, no value unless given
        required = raw.get("required", False)
    else:
        required = raw.get("required", default is MISSING)
    if not isinstance(required, bool):
        raise definition_error(f"{where}required must be true or false, not {required!r}")
    if default is not MISSING:
        try:
            spec = make_frozen(VarSpec, name=name, type=kind, option=option, values=values, default=MISSING,
                        required=True, description=description)
            default = coerce(spec, default, from_string=False)
        except ParamError as exc:
            hint = " (quote it in YAML to make it a string)" if kind == "str" else ""
            shown = show_value(default)
            raise definition_error(f"{where}default {shown} does not fit type {kind}: {exc}{hint}") from None
    return make_frozen(VarSpec, name=name, type=kind, option=option, values=values, default=default,
                required=required, description=description)


def make_frozen(cls: type, **fields: Any) -> Any:
    """A frozen dataclass made from every one of its fields without running ``__init__`` (whose
    ``object.__setattr__`` per field is most of the cost of a value made 10,000 times a load)."""
    new = object.__new__(cls)
    new.__dict__.update(fields)
    return new


def vars_field(raw: Any) -> tuple[VarSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise definition_error(f"vars: must be a list of mappings, not {type(raw).__name__}")
    specs = tuple(_var(i, item) for i, item in enumerate(raw))
    seen: dict[str, str] = {}
    for i, spec in enumerate(specs):
        upper = spec.name.upper()
        if upper in seen:
            same = "repeats" if seen[upper] == spec.name else "differs only in case from"
            raise definition_error(f"vars[{i}] ({spec.name}): name {same} var {seen[upper]!r}")
        seen[upper] = spec.name
    return specs


def schedule_field(raw: Any, specs: tuple[VarSpec, ...]) -> tuple[ScheduleEntry, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise definition_error(f"schedule: must be a list of entries, not {type(raw).__name__}")
    entries = tuple(parse_entry(i, item) for i, item in enumerate(raw))
    if entries:
        for spec in specs:
            if spec.required and spec.default is MISSING:
                raise definition_error(f"schedule: var {spec.name!r} is required and has no default "
                           "(scheduled runs use the defaults)")
    return entries


def redact_hook_url(url: str) -> str:
    """A webhook URL as the log and the API show it: ``scheme://host:port/path``, without
    credentials, parameters, query or fragment (where tokens go)."""
    try:
        parts = urlparse(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme or host else parts.path


def redact_hooks(hooks: Any) -> Any:
    """A job document's ``hooks`` as the API shows them: each URL through :func:`redact_hook_url`."""
    if not isinstance(hooks, Mapping):
        return hooks

    def shown(url: Any) -> Any:
        return redact_hook_url(url) if isinstance(url, str) else url

    return {event: [shown(u) for u in urls] if isinstance(urls, list) else shown(urls)
            for event, urls in hooks.items()}


def hooks_field(raw: Any) -> Mapping[str, tuple[str, ...]]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise definition_error(f"hooks: must be a mapping of event name to URLs, not {type(raw).__name__}")
    hooks = {}
    for event, urls in raw.items():
        if not isinstance(event, str) or not (event == "*" or EVENT_NAME.match(event)):
            raise definition_error(f"hooks: {event!r} is not an event name (or '*')")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            raise definition_error(f"hooks.{event}: must be a URL or a list of URLs, "
                                   f"not {type(urls).__name__}")
        for url in urls:
            try:
                parts = urlsplit(url) if isinstance(url, str) else None
            except ValueError:  # such as an unclosed [ of an IPv6 address
                parts = None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                shown = (repr(redact_hook_url(url)) if isinstance(url, str)
                         else f"a {type(url).__name__}" if isinstance(url, (dict, list)) else repr(url))
                raise definition_error(f"hooks.{event}: {shown} is not an http(s) URL")
        hooks[event] = tuple(urls)
    return MappingProxyType(hooks)


def env_field(raw: Any) -> Mapping[str, str]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise definition_error(f"env: must be a mapping of names to strings, not {type(raw).__name__}")
    env = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not VAR_NAME_RE.match(name):
            raise definition_error(f"env: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise definition_error(
                f"env.{name}: names starting with {RESERVED_ENV_PREFIX} are set by Overseer")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise definition_error(f"env.{name}: {value!r} is not a string, number or bool")
        if "\0" in value:
            raise definition_error(f"env.{name}: contains a NUL character")
        env[name] = value
    return MappingProxyType(env)


def command_field(source: Any, specs: tuple[VarSpec, ...]) -> str:
    if not isinstance(source, str) or not source.strip():
        raise definition_error(f"command: must be a non-empty string, not {source!r}")
    if "\0" in source:
        raise definition_error("command: contains a NUL character")
    try:
        names = templates.check_template(source)
    except ValueError as exc:
        raise definition_error(f"command: {exc}") from None
    unknown = sorted(names - _TEMPLATE_GLOBALS - {spec.name for spec in specs})
    if unknown:
        raise definition_error(f"command: the template uses {unknown[0]!r}, which is not a declared var")
    try:
        templates.check_quoting(source, {spec.name: spec.type for spec in specs})
    except ValueError as exc:
        raise definition_error(f"command: {exc}") from None
    return source
