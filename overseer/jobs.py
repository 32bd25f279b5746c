"""The job repository model: finding job files, parsing and validating them (SPEC §3, §4).

:func:`load_repository` works on a plain working tree (no git): ``overseer validate`` passes a
checkout, RepoSync a snapshot's root when it cannot read the commit from git. :func:`load_tree`
gives the same result from a commit's tree as git lists it (overseer/job_files.py ``Tree``) and
its blobs, before any file of it is checked out. RepoSync fills in the commit. A file that does
not validate is reported as ``(file, message)`` and skipped; the message names the key, var or
value at fault.
"""
from __future__ import annotations

import difflib
import errno as _errno
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from overseer import render
from overseer.exceptions import JobDefinitionError, ParamError
from overseer.job_files import (
    Tree,
    escaping,
    gc_paused,
    job_name_for,
    jsonable,
    load_document,
    read_bytes,
    scan,
)
from overseer.parse_cache import ParseCache, digest
from overseer.schedule import ScheduleEntry, parse_entry
from overseer.vars import MISSING, VAR_TYPES, VarSpec, coerce, show_value

__all__ = ["MISSING", "VAR_TYPES", "Job", "ScheduleEntry", "VarSpec", "discover", "job_name_for",
           "load_repository", "load_tree", "parse_job"]

log = logging.getLogger(__name__)

JOB_KEYS = ("command", "script", "timeout", "vars", "schedule", "description", "hooks", "env",
            "max_concurrent")
VAR_KEYS = ("name", "type", "option", "values", "default", "required", "description")
_JOB_KEY_SET = frozenset(JOB_KEYS)
_VAR_KEY_SET = frozenset(VAR_KEYS)
JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EVENT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
RESERVED_ENV_PREFIX = "OVERSEER_"
MAX_JOB_FILE_BYTES = 1 << 20  # a job file is a few lines; a bigger one is refused before it is parsed
_TEMPLATE_GLOBALS = render.template_globals()


def discover(root: Path) -> list[str]:
    """Relative paths ('/'-separated, sorted) of the job files under ``root``."""
    return scan(Path(root))[0]


def escaping_symlinks(root: Path) -> list[tuple[str, str]]:
    """Every symlink in the tree (bin/ and scripts/ included) that points outside it."""
    return escaping(Path(root), scan(Path(root))[1])


@dataclass(frozen=True)
class Job:
    """One valid job definition."""

    name: str
    file: str
    command: str | None
    script: str | None
    timeout: float | None
    vars: tuple[VarSpec, ...]
    schedule: tuple[ScheduleEntry, ...]
    description: str | None
    hooks: Mapping[str, tuple[str, ...]]
    env: Mapping[str, str]
    max_concurrent: int | None
    definition: Mapping = field(compare=False)
    commit: str | None = None


def with_commit(job: Job, commit: str) -> Job:
    """``replace(job, commit=commit)`` without re-running ``__init__``: a sync sets the commit of
    every job (10,000 of them in one large repository), and ``replace`` was a third of it."""
    new = object.__new__(Job)
    new.__dict__.update(job.__dict__)
    object.__setattr__(new, "commit", commit)
    return new


def _err(message: str) -> JobDefinitionError:
    return JobDefinitionError(message)


def _unknown(key: Any, allowed: tuple[str, ...], where: str = "") -> JobDefinitionError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    return _err(f"{where}unknown key {key!r}{hint}")


def _document(relpath: str, data: bytes) -> tuple[dict, bool]:
    """The job file's mapping, and whether it is plain JSON data already (see ``load_document``)."""
    is_json = relpath.endswith(".json")
    try:
        doc, plain = load_document(data, is_json)
    except json.JSONDecodeError as exc:
        raise _err(f"invalid JSON on line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise _err(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # a duplicate JSON key; a number too long to convert
        raise _err(f"invalid {'JSON' if is_json else 'YAML'}: {exc}") from None
    except yaml.YAMLError as exc:
        text = " ".join(str(exc).split())
        raise _err(f"invalid YAML: {text}") from None
    except RecursionError:
        raise _err("the document is nested too deeply") from None
    if isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict):
        doc = doc[0]
    if isinstance(doc, dict):
        return doc, plain
    if doc is None:
        raise _err("the file is empty: a job file holds a mapping")
    if isinstance(doc, list):
        raise _err(f"a job file holds a mapping or a list of one mapping, not a list of {len(doc)} items")
    raise _err(f"a job file holds a mapping, not {type(doc).__name__}")


def _script(root: Path, script: Any) -> str:
    if not isinstance(script, str) or not script.strip() or "\0" in script:
        raise _err(f"script: {script!r} is not a path")
    scripts = Path(root) / "scripts"
    if os.path.isabs(script):
        raise _err(f"script: {script!r} must be a path relative to scripts/")
    rel = script
    if rel.startswith("scripts/") and not (scripts / rel).exists() and (Path(root) / rel).exists():
        rel = rel[len("scripts/"):]
    real_scripts = os.path.realpath(scripts)
    target = os.path.realpath(scripts / rel)
    if os.path.commonpath([real_scripts, target]) != real_scripts or target == real_scripts:
        raise _err(f"script: {script!r} is outside scripts/")
    try:
        mode = os.stat(target).st_mode
    except OSError:
        raise _err(f"script: {script!r} does not exist under scripts/") from None
    if not stat.S_ISREG(mode):
        raise _err(f"script: {script!r} is not a regular file")
    if not mode & 0o111:
        raise _err(f"script: {script!r} is not executable (git update-index --chmod=+x)")
    return Path(os.path.normpath(rel)).as_posix()


def _tree_script(tree: Tree, script: Any) -> str:
    """:func:`_script` asked of ``tree`` (its snapshot root as ``root``): the same checks in the same
    order, with the same messages. ``Path(root) / "scripts" / rel`` is pathlib's join, which drops
    empty and ``.`` parts: ``_joined`` does the same."""
    if not isinstance(script, str) or not script.strip() or "\0" in script:
        raise _err(f"script: {script!r} is not a path")
    if os.path.isabs(script):
        raise _err(f"script: {script!r} must be a path relative to scripts/")
    rel = script
    if (rel.startswith("scripts/") and not tree.exists(_joined("scripts", rel))
            and tree.exists(_joined(rel))):
        rel = rel[len("scripts/"):]
    real_scripts = tree.realpath("scripts")
    target = tree.realpath(_joined("scripts", rel))
    if os.path.commonpath([real_scripts, target]) != real_scripts or target == real_scripts:
        raise _err(f"script: {script!r} is outside scripts/")
    kind, _error = tree.resolve(tree.relative(target))
    if kind is None:
        raise _err(f"script: {script!r} does not exist under scripts/")
    if kind[0] != "file":
        raise _err(f"script: {script!r} is not a regular file")
    if not kind[2]:
        raise _err(f"script: {script!r} is not executable (git update-index --chmod=+x)")
    return Path(os.path.normpath(rel)).as_posix()


def _joined(*parts: str) -> str:
    return "/".join(p for part in parts for p in part.split("/") if p and p != ".")


def _positive(key: str, value: Any, integer: bool) -> Any:
    kind = "a positive integer" if integer else "a positive number of seconds"
    number_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    try:
        finite = number_ok and math.isfinite(value) and (integer or math.isfinite(float(value)))
    except OverflowError:
        finite = False
    if isinstance(value, bool) or not finite or value <= 0:
        raise _err(f"{key}: {show_value(value)} is not {kind}")
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
        raise _err(f"vars[{index}]: must be a mapping with a name, not {raw!r}")
    name = raw.get("name")
    where = f"vars[{index}] ({name}): " if isinstance(name, str) else f"vars[{index}]: "
    for key in raw:
        if key not in _VAR_KEY_SET:
            raise _unknown(key, VAR_KEYS, where)
    if not isinstance(name, str) or not VAR_NAME_RE.match(name):
        raise _err(f"{where}name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
    if name in _TEMPLATE_GLOBALS:
        raise _err(f"{where}name {name!r} is taken by a template function")
    kind = raw.get("type", "str")
    if kind is None:
        kind = "null"   # YAML reads an unquoted `type: null` as a null value
    if kind not in VAR_TYPES:
        raise _err(f"{where}type {kind!r} is not one of {', '.join(VAR_TYPES)}")
    option = raw.get("option", False)
    if not isinstance(option, bool):
        raise _err(f"{where}option must be true or false, not {option!r}")
    values = raw.get("values")
    if kind == "enum":
        if not isinstance(values, list) or not values:
            raise _err(f"{where}values must be a list for type enum")
        for value in values:
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise _err(f"{where}enum value {value!r} is not a scalar")
        if len({json.dumps(jsonable(v)) for v in values}) != len(values):
            raise _err(f"{where}values repeat an entry")
        values = tuple(jsonable(v) for v in values)
    elif values is not None:
        raise _err(f"{where}values are only for type enum, not {kind}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _err(f"{where}description must be text")
    default = raw.get("default", MISSING)
    if default is None and kind != "null":
        default = MISSING   # `default: null` (or empty): optional, no value unless given
        required = raw.get("required", False)
    else:
        required = raw.get("required", default is MISSING)
    if not isinstance(required, bool):
        raise _err(f"{where}required must be true or false, not {required!r}")
    if default is not MISSING:
        try:
            spec = _new(VarSpec, name=name, type=kind, option=option, values=values, default=MISSING,
                        required=True, description=description)
            default = coerce(spec, default, from_string=False)
        except ParamError as exc:
            hint = " (quote it in YAML to make it a string)" if kind == "str" else ""
            shown = show_value(default)
            raise _err(f"{where}default {shown} does not fit type {kind}: {exc}{hint}") from None
    return _new(VarSpec, name=name, type=kind, option=option, values=values, default=default,
                required=required, description=description)


def _new(cls: type, **fields: Any) -> Any:
    """A frozen dataclass made from every one of its fields without running ``__init__`` (whose
    ``object.__setattr__`` per field is most of the cost of a value made 10,000 times a load)."""
    new = object.__new__(cls)
    new.__dict__.update(fields)
    return new


def _vars(raw: Any) -> tuple[VarSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _err(f"vars: must be a list of mappings, not {type(raw).__name__}")
    specs = tuple(_var(i, item) for i, item in enumerate(raw))
    seen: dict[str, str] = {}
    for i, spec in enumerate(specs):
        upper = spec.name.upper()
        if upper in seen:
            same = "repeats" if seen[upper] == spec.name else "differs only in case from"
            raise _err(f"vars[{i}] ({spec.name}): name {same} var {seen[upper]!r}")
        seen[upper] = spec.name
    return specs


def _schedule(raw: Any, specs: tuple[VarSpec, ...]) -> tuple[ScheduleEntry, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise _err(f"schedule: must be a list of entries, not {type(raw).__name__}")
    entries = tuple(parse_entry(i, item) for i, item in enumerate(raw))
    if entries:
        for spec in specs:
            if spec.required and spec.default is MISSING:
                raise _err(f"schedule: var {spec.name!r} is required and has no default "
                           "(scheduled runs use the defaults)")
    return entries


def _hooks(raw: Any) -> Mapping[str, tuple[str, ...]]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise _err(f"hooks: must be a mapping of event name to URLs, not {type(raw).__name__}")
    hooks = {}
    for event, urls in raw.items():
        if not isinstance(event, str) or not (event == "*" or EVENT_NAME_RE.match(event)):
            raise _err(f"hooks: {event!r} is not an event name (or '*')")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            raise _err(f"hooks.{event}: must be a URL or a list of URLs, not {urls!r}")
        for url in urls:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                raise _err(f"hooks.{event}: {url!r} is not an http(s) URL")
        hooks[event] = tuple(urls)
    return MappingProxyType(hooks)


def _env(raw: Any) -> Mapping[str, str]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise _err(f"env: must be a mapping of names to strings, not {type(raw).__name__}")
    env = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not VAR_NAME_RE.match(name):
            raise _err(f"env: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise _err(f"env.{name}: names starting with {RESERVED_ENV_PREFIX} are set by Overseer")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise _err(f"env.{name}: {value!r} is not a string, number or bool")
        if "\0" in value:
            raise _err(f"env.{name}: contains a NUL character")
        env[name] = value
    return MappingProxyType(env)


def _command(source: Any, specs: tuple[VarSpec, ...]) -> str:
    if not isinstance(source, str) or not source.strip():
        raise _err(f"command: must be a non-empty string, not {source!r}")
    if "\0" in source:
        raise _err("command: contains a NUL character")
    try:
        names = render.check_template(source)
    except ValueError as exc:
        raise _err(f"command: {exc}") from None
    unknown = sorted(names - _TEMPLATE_GLOBALS - {spec.name for spec in specs})
    if unknown:
        raise _err(f"command: the template uses {unknown[0]!r}, which is not a declared var")
    return source


@lru_cache(maxsize=32768)
def _parse_content(relpath: str, data: bytes) -> Job:
    """Everything about a job that its path and bytes decide (cached: reloads of unchanged files
    are free). ``script`` is left as written; :func:`parse_job` checks it against the tree."""
    name = job_name_for(relpath)
    if name is None:
        raise _err(f"{relpath!r} is not a job file")
    if not JOB_NAME_RE.match(name):
        raise _err(f"job name {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    doc, plain = _document(relpath, data)
    for key in doc:
        if key not in _JOB_KEY_SET:
            raise _unknown(key, JOB_KEYS)
    command, script = doc.get("command"), doc.get("script")
    if command is not None and script is not None:
        raise _err("command and script: a job has one or the other, not both")
    if script is not None and (not isinstance(script, str) or not script.strip()):
        raise _err(f"script: {script!r} is not a path")
    timeout = doc.get("timeout")
    if timeout is not None:
        timeout = float(_positive("timeout", timeout, integer=False))
    max_concurrent = doc.get("max_concurrent")
    if max_concurrent is not None:
        _positive("max_concurrent", max_concurrent, integer=True)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise _err(f"description: must be text, not {type(description).__name__}")
    specs = _vars(doc.get("vars"))
    return _new(
        Job,
        name=name,
        file=relpath,
        command=_command(command, specs) if command is not None else None,
        script=script,
        timeout=timeout,
        vars=specs,
        schedule=_schedule(doc.get("schedule"), specs),
        description=description,
        hooks=_hooks(doc.get("hooks")),
        env=_env(doc.get("env")),
        max_concurrent=max_concurrent,
        definition=doc if plain else jsonable(doc),
        commit=None,
    )


def parse_job(root: Path, relpath: str, data: bytes | None = None, cache: ParseCache | None = None,
              used: dict | None = None) -> Job:
    """Parse and validate one job file; raise JobDefinitionError naming what is wrong.

    ``data`` is the file's content when the caller has it, else the file is read. With ``cache``,
    a file parsed before (same path, same bytes) is taken from it, and every valid job is noted
    in ``used`` for the next ``cache.save``.
    """
    relpath = relpath.replace(os.sep, "/")
    if data is None:
        try:
            size = os.stat(os.path.join(root, relpath)).st_size
            if size <= MAX_JOB_FILE_BYTES:
                data = read_bytes(root, relpath)
        except OSError as exc:
            raise _err(f"cannot read the file: {exc.strerror or exc}") from None
    else:
        size = len(data)
    if size > MAX_JOB_FILE_BYTES or len(data) > MAX_JOB_FILE_BYTES:
        raise _too_big(size)
    job = _content_job(relpath, bytes(data), cache, used)
    if job.script is not None:
        job = replace(job, script=_script(root, job.script))
    return job


def _too_big(size: int) -> JobDefinitionError:
    return _err(f"the file is {size} bytes; job files are limited to {MAX_JOB_FILE_BYTES} bytes")


def _content_job(relpath: str, data: bytes, cache: ParseCache | None, used: dict | None,
                 key: bytes | None = None) -> Job:
    """The job of ``relpath`` holding ``data``, its script not checked yet: from ``cache`` when it
    has it (``key`` is the content digest, when known), else parsed."""
    try:
        job = None
        if cache is not None:
            if key is None:
                key = digest(data)
            job = cache.get(relpath, key)
        if job is None:
            job = _parse_content(relpath, data)
        if used is not None:
            used[(relpath, key or b"")] = job
        return job
    except JobDefinitionError:
        raise
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the whole load
        log.warning("%s: unexpected error while validating", relpath, exc_info=True)
        raise _err(f"cannot be validated: {type(exc).__name__}: {exc}") from None


def _unique_names(paths: list[str], errors: list[tuple[str, str]]) -> list[str]:
    """The job files of ``paths`` (sorted) whose name no other file gives; both files of a name
    given twice go to ``errors``."""
    by_name: dict[str, list[str]] = {}
    for relpath in paths:
        by_name.setdefault(job_name_for(relpath), []).append(relpath)
    unique = []
    for name, same in by_name.items():
        if len(same) == 1:
            unique.append(same[0])
            continue
        for path in same:
            others = ", ".join(p for p in same if p != path)
            errors.append((path, f"job name {name!r} is also given by {others}"))
    return unique


def load_repository(root: Path, cache: ParseCache | None = None
                    ) -> tuple[dict[str, Job], list[tuple[str, str]]]:
    """Every valid job under ``root`` by name, and every problem as ``(file, message)``, by file.
    With ``cache``, unchanged files are not parsed again, and what this load used is left in
    ``cache.used`` for ``cache.save``."""
    root = Path(root)
    used: dict | None = {} if cache is not None else None
    paths, links = scan(root)
    errors = escaping(root, links)
    leaving = {path for path, _ in errors}
    jobs: dict[str, Job] = {}
    with gc_paused():
        for relpath in _unique_names([p for p in paths if p not in leaving], errors):
            try:
                job = parse_job(root, relpath, cache=cache, used=used)
                jobs[job.name] = job
            except JobDefinitionError as exc:
                errors.append((relpath, str(exc)))
    if cache is not None:
        cache.used = used
    errors.sort()
    if errors:
        log.info("job repository %s: %d valid jobs, %d problems", root, len(jobs), len(errors))
    return jobs, errors


BlobReader = Callable[[list[str], int], Mapping[str, tuple[int, "bytes | None"]]]


def load_tree(tree: Tree, read_blobs: BlobReader, cache: ParseCache | None = None
              ) -> tuple[dict[str, Job], list[tuple[str, str]]]:
    """What :func:`load_repository` gives for the commit's snapshot, from ``tree`` and its blobs:
    ``read_blobs(oids, limit)`` returns ``oid -> (size, bytes)``, the bytes None above ``limit``
    (overseer/snapshots.py ``Snapshots.read_blobs``). With ``cache``, a job file whose blob the
    cache knows is not read at all; ``cache.used`` and ``cache.used_blobs`` are left for
    ``cache.save``."""
    used: dict | None = {} if cache is not None else None
    used_blobs: dict[str, bytes] = {}
    errors = list(tree.link_errors)
    found: dict[str, Job] = {}
    unread: list[tuple[str, str]] = []
    with gc_paused():
        files = _unique_names(tree.job_files(), errors)
        for relpath in files:
            oid, error = tree.content(relpath)
            if oid is None:
                errors.append((relpath, f"cannot read the file: {os.strerror(error or _errno.EIO)}"))
                continue
            key = cache.digest_of(oid) if cache is not None else None
            job = cache.get(relpath, key) if key is not None else None
            if job is None:
                unread.append((relpath, oid))
                continue
            used[(relpath, key)] = job
            used_blobs[oid] = key
            found[relpath] = job
        blobs = read_blobs(sorted({oid for _, oid in unread}), MAX_JOB_FILE_BYTES) if unread else {}
        for relpath, oid in unread:
            size, data = blobs[oid]
            try:
                if data is None or size > MAX_JOB_FILE_BYTES:
                    raise _too_big(size)
                key = digest(data) if cache is not None else None
                found[relpath] = _content_job(relpath, data, cache, used, key)
            except JobDefinitionError as exc:
                errors.append((relpath, str(exc)))
                continue
            if key is not None:
                used_blobs[oid] = key
        jobs: dict[str, Job] = {}
        for relpath in files:   # in the order load_repository gives
            job = found.get(relpath)
            if job is None:
                continue
            if job.script is not None:
                try:
                    job = replace(job, script=_tree_script(tree, job.script))
                except JobDefinitionError as exc:
                    errors.append((relpath, str(exc)))
                    continue
            jobs[job.name] = job
    if cache is not None:
        cache.used, cache.used_blobs = used, used_blobs
    errors.sort()
    if errors:
        log.info("job repository tree: %d valid jobs, %d problems", len(jobs), len(errors))
    return jobs, errors
