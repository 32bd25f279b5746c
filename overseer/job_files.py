"""The files of a job repository: which files are jobs, symlinks that leave the tree, and reading a
job file's document (YAML through the safe C loader, or JSON), fast enough for 10,000 files.
"""
from __future__ import annotations

import base64
import gc
import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

log = logging.getLogger(__name__)

JOB_SUFFIXES = (".yml", ".yaml", ".json")
SKIPPED_DIRS = ("bin", "scripts")
_SKIPPED_PREFIXES = tuple(f"{d}/" for d in SKIPPED_DIRS)
_SUFFIXES = frozenset(suffix[1:] for suffix in JOB_SUFFIXES)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_CONSTRUCTORS = {f"tag:yaml.org,2002:{name}": _LOADER.yaml_constructors[f"tag:yaml.org,2002:{name}"]
                        for name in ("null", "bool", "int", "float", "timestamp")}


def job_name_for(relpath: str) -> str | None:
    """The job name of a repository file (``team/backup.yaml`` -> ``team.backup``), None if no job.

    Files under the top-level ``bin/`` and ``scripts/``, in dot-directories, dot-files and
    files without a ``.yml``, ``.yaml`` or ``.json`` suffix are not jobs.
    """
    if os.sep != "/":
        relpath = relpath.replace(os.sep, "/")
    if relpath.startswith(_SKIPPED_PREFIXES) or relpath.startswith(".") or "/." in relpath:
        return None
    stem, dot, suffix = relpath.rpartition(".")
    if suffix not in _SUFFIXES or not stem or stem.endswith("/"):
        return None
    return stem.replace("/", ".")


def scan(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """One pass over the tree (``.git`` skipped, symlinked dirs not entered).

    Returns the job files (relative, '/'-separated, sorted) and every symlink as
    ``(relpath, absolute path)``.
    """
    jobs: list[str] = []
    links: list[tuple[str, str]] = []
    stack = [(str(root), "")]
    while stack:
        dirpath, rel = stack.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError as exc:
            log.warning("cannot list %s: %s", dirpath, exc)
            continue
        for entry in entries:
            relpath = rel + entry.name
            if entry.is_symlink():
                links.append((relpath, entry.path))
                if entry.is_dir():
                    continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name != ".git":
                    stack.append((entry.path, relpath + "/"))
            elif job_name_for(relpath) is not None:
                jobs.append(relpath)
    return sorted(jobs), sorted(links)


def escaping(root: Path, links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The symlinks of ``links`` that point outside ``root`` (absolute targets always do)."""
    real_root = os.path.realpath(root)
    errors = []
    for relpath, path in links:
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if os.path.isabs(target) or os.path.commonpath([real_root, resolved]) != real_root:
            errors.append((relpath, f"symlink to {target!r} leaves the repository"))
    return errors


MAX_NODES = 200_000   # after alias expansion: a job file is small; an alias bomb is not


def _construct(loader: Any, node: yaml.Node, budget: list[int]) -> Any:
    """Node graph -> Python, the common tags inline; the rest through the safe constructor.

    Faster than PyYAML's generator-based construction, and refuses a key given twice. Tags the
    safe constructor does not know (``!!python/object`` ...) raise ConstructorError there.
    Aliases are expanded (no shared objects), within ``budget`` nodes.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise ConstructorError(None, None, f"more than {MAX_NODES} nodes (aliases expanded)", node.start_mark)
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP and isinstance(node, yaml.MappingNode):
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                return loader.construct_object(node, deep=True)
            key = _construct(loader, key_node, budget)
            try:
                seen = key in result
            except TypeError:
                raise ConstructorError(None, None, "found an unhashable key", key_node.start_mark) from None
            if seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            result[key] = _construct(loader, value_node, budget)
        return result
    if tag == _SEQ and isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, budget) for item in node.value]
    scalar = _SCALAR_CONSTRUCTORS.get(tag)
    if scalar is not None and isinstance(node, yaml.ScalarNode):
        return scalar(loader, node)
    return loader.construct_object(node, deep=True)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


class _Loader(_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader with a memo for implicit scalar tags: job files repeat the same keys."""

    _tags: dict[tuple[str, bool], str] = {}

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            memo = (value, implicit[1])
            tag = self._tags.get(memo)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) > 65536:
                    self._tags.clear()
                self._tags[memo] = tag
            return tag
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None   # no path resolvers are registered: skip the bookkeeping

    def ascend_resolver(self) -> None:
        return None


def parse_document(data: bytes, is_json: bool) -> Any:
    """The document of a job file.

    Raises json.JSONDecodeError, ValueError (a duplicate JSON key, bad encoding) or yaml.YAMLError.
    """
    if is_json:
        return json.loads(data, object_pairs_hook=_unique_pairs)
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(loader, node, [MAX_NODES])
    finally:
        loader.dispose()


def read_bytes(root: Path, relpath: str) -> bytes:
    fd = os.open(os.path.join(root, relpath), os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk load (re-entrant, across threads).

    Parsing thousands of files allocates millions of short-lived containers; with the collector
    running, its generational passes cost about a quarter of the load. Reference counting still
    frees everything that is not in a cycle; the collector resumes afterwards.
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


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
